"""Result files (atomic, never through symlinks, safe names) and secret redaction in logs."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pysubs2
import pytest
import structlog

from stenod import logging as stenod_logging
from stenod.adapters.folders.atomic import atomic_write
from stenod.adapters.folders.writers import FileSink, safe_stem
from stenod.errors import ErrorInfo, LeaseExpired
from stenod.formats import render_srt, render_vtt
from stenod.jobs import ItemState
from stenod.journal import Held, OpenItem
from stenod.output_spec import OutputSpec
from stenod.provider import ItemResult, Segment, Transcript, TranslatedDocument

TRANSCRIPT = Transcript(
    "Hello there. General Kenobi.",
    "en",
    3.2,
    (Segment(0.0, 1.5, "Hello there.", speaker="0"), Segment(1.6, 3.2, "General <Kenobi> & co.", speaker="1")),
)


def item(path: Path, **output) -> OpenItem:
    st = path.stat() if path.exists() else None
    return OpenItem(
        item_id="i1",
        job_id="j1",
        state=ItemState.SUBMITTED,
        task="transcribe",
        provider="echo",
        language=None,
        target_languages=(),
        options={},
        output=OutputSpec(**output),
        input=str(path),
        name=path.name,
        path=str(path),
        size=st.st_size if st else 0,
        device=st.st_dev if st else None,
        inode=st.st_ino if st else None,
        result=None,
        created_at="2026-01-01T00:00:00Z",
        cancel_requested=False,
    )


def test_all_four_outputs_are_written_beside_the_input(tmp_path):
    audio = tmp_path / "call.wav"
    audio.write_bytes(b"a")
    written = FileSink(tmp_path / "results").write_result(item(audio), ItemResult("i1", transcript=TRANSCRIPT))
    assert sorted(Path(f.path).name for f in written) == ["call.json", "call.srt", "call.txt", "call.vtt"]
    assert (tmp_path / "call.txt").read_text() == "Speaker 0: Hello there.\nSpeaker 1: General <Kenobi> & co.\n"
    data = json.loads((tmp_path / "call.json").read_text())
    assert data["segments"][1]["speaker"] == "1" and data["duration"] == 3.2 and data["source"] == str(audio)


def test_subtitles_parse_back_with_their_timings_and_speakers():
    srt = pysubs2.SSAFile.from_string(render_srt(TRANSCRIPT).decode(), format_="srt")
    assert [(e.start, e.end) for e in srt] == [(0, 1500), (1600, 3200)]
    assert srt[0].plaintext == "Speaker 0: Hello there."
    vtt = render_vtt(TRANSCRIPT).decode()
    assert vtt.startswith("WEBVTT") and "00:00:01.600 --> 00:00:03.200" in vtt
    assert "<v Speaker 1>General &lt;Kenobi&gt; &amp; co." in vtt


def test_a_symlink_planted_at_an_output_path_is_replaced_not_followed(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / "x.txt").symlink_to(outside)
    atomic_write(inbox / "x.txt", b"result")
    assert outside.read_text() == "keep me"
    assert not (inbox / "x.txt").is_symlink() and (inbox / "x.txt").read_text() == "result"
    assert [p.name for p in inbox.iterdir()] == ["x.txt"]  # no temp file left behind


@pytest.mark.parametrize(
    "name",
    [
        "../../escape.wav",
        "/abs.wav",
        "a/../../b.wav",
        "..",
        "",
        "nul\x00.wav",
        "x" * 300 + ".wav",
        "back\\slash.wav",
        "e\u0301cole.wav",
    ],
)
def test_hostile_names_stay_inside_the_output_folder(tmp_path, name):
    stem = safe_stem(name)
    target = (tmp_path / f"{stem}.txt").resolve()
    assert target.parent == tmp_path.resolve() and stem and "/" not in stem and "\x00" not in stem
    assert len(target.name.encode()) <= 255


def test_translated_documents_are_named_by_language(tmp_path):
    doc = tmp_path / "notes.docx"
    doc.write_bytes(b"d")
    written = FileSink(tmp_path).write_result(
        item(doc),
        ItemResult(
            "i1",
            documents=(TranslatedDocument("fr", b"bonjour", "docx"), TranslatedDocument("de/../x", b"hallo", "docx")),
        ),
    )
    assert sorted(Path(f.path).name for f in written) == ["notes.dex.docx", "notes.fr.docx"]


def test_a_failed_item_gets_an_error_file_saying_what_to_do(tmp_path):
    audio = tmp_path / "bad.wav"
    audio.write_bytes(b"a")
    FileSink(tmp_path).write_error(item(audio), ErrorInfo("not_audio", "bad.wav is not audio", hint="Re-export it."))
    body = json.loads((tmp_path / "bad.error.json").read_text())
    assert body["error"]["code"] == "not_audio" and body["what_to_do"] == "Re-export it."


def test_after_move_puts_input_and_outputs_in_done(tmp_path):
    audio = tmp_path / "m.wav"
    audio.write_bytes(b"a")
    FileSink(tmp_path).write_result(
        item(audio, after="move", root=str(tmp_path)), ItemResult("i1", transcript=TRANSCRIPT)
    )
    assert sorted(p.name for p in (tmp_path / "done").iterdir()) == ["m.json", "m.srt", "m.txt", "m.vtt", "m.wav"]
    assert not audio.exists()


def test_after_delete_removes_the_input_only_on_success(tmp_path):
    good, bad = tmp_path / "g.wav", tmp_path / "b.wav"
    good.write_bytes(b"a")
    bad.write_bytes(b"b")
    sink = FileSink(tmp_path)
    sink.write_result(item(good, after="delete"), ItemResult("i1", transcript=TRANSCRIPT))
    sink.write_error(item(bad, after="delete"), ErrorInfo("x", "y"))
    assert not good.exists() and bad.exists()


def test_secrets_never_reach_a_log_line(monkeypatch):
    stream = io.StringIO()
    stenod_logging.configure(fmt="json", level="debug", stream=stream)
    stenod_logging.REDACTOR.add_secrets(["CANARY-KEY-42"])
    log = structlog.get_logger("test")
    log.info("provider.call", api_key="CANARY-KEY-42", url="https://blob/x?sv=1&sig=CANARY-SIG-7&se=2030")
    log.warning("http.error", detail="401: key CANARY-KEY-42 rejected", headers={"Authorization": "Bearer abc.def"})
    try:
        raise RuntimeError("failed https://h/p?X-Amz-Signature=CANARY-SIG-9")
    except RuntimeError:
        log.exception("boom")
    out = stream.getvalue()
    assert "CANARY" not in out and "abc.def" not in out
    assert out.count("\n") == 3 and all(json.loads(line) for line in out.splitlines())


def test_a_downloaded_url_input_is_removed_once_its_outputs_are_written(tmp_path):
    download = tmp_path / "downloads" / "job1" / "a.mp3"
    download.parent.mkdir(parents=True)
    download.write_bytes(b"a")
    url_item = item(download)
    url_item = OpenItem(
        **{**{f: getattr(url_item, f) for f in url_item.__slots__}, "input": "https://example.org/a.mp3?sig=x"}
    )
    written = FileSink(tmp_path / "results").write_result(url_item, ItemResult("i1", transcript=TRANSCRIPT))
    assert all(Path(f.path).parent == tmp_path / "results" / "j1" for f in written)
    assert not download.exists() and not download.parent.exists()


def test_outputs_stop_before_the_first_rename_after_the_lease_ran_out_and_leave_no_temp_file(tmp_path):
    """The writer's side of a frozen lease holder: the first check after the lease's end stops
    the writes there (a check that passes twice, then raises: two files in place, no third)."""
    audio = tmp_path / "call.wav"
    audio.write_bytes(b"a")
    checks = iter([None, None, None])  # the check at the start, then before each rename

    def lease() -> None:
        if next(checks, "expired") == "expired":
            raise LeaseExpired("b1")

    with pytest.raises(LeaseExpired):
        FileSink(tmp_path).write_result(item(audio), ItemResult("i1", transcript=TRANSCRIPT), check=lease)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["call.json", "call.txt", "call.wav"]


def test_a_held_lease_expires_on_the_monotonic_clock():
    Held("b1", time.monotonic() + 60).check()
    with pytest.raises(LeaseExpired):
        Held("b1", time.monotonic() - 0.001).check()
