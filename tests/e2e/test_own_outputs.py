"""A watched folder never takes stenod's own outputs back as inputs (issue 23): not when its
rule translates (and so accepts ``.txt`` documents, the very files stenod writes), not when
another rule's outputs land in it, not after a restart. Outputs are known from the journal,
by path, size and mtime: a file a user puts in the place of one of them is new work, and a
document the user drops is translated once."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from support.harness import Daemon, fake_server, running, start, wait_for, write_config
from support.postgres import fresh_database
from support.speech import ITALIAN, festival_speech
from tests.fakes.translator import DEFAULT_API_KEY
from tests.journal_rows import rows

QUIET_SECONDS = 3.0  # well past the rules' settle time and a rescan: long enough for a second job to appear


def _inputs(state_dir: Path) -> list[str]:
    """Every input the daemon ever took, in order."""
    return [r[0] for r in rows(state_dir, "SELECT input FROM items ORDER BY job_id, idx")]


def _documents_translated(url: str) -> int:
    """Calls to the fake's single-document translation (one per document and language)."""
    return int(httpx.get(f"{url}/__fake__/stats", timeout=5).json()["counters"].get("translate_calls", 0))


def _done(state_dir: Path, count: int) -> bool:
    finished = rows(state_dir, "SELECT COUNT(*) FROM items WHERE state IN ('succeeded', 'failed', 'cancelled')")
    return int(finished[0][0]) >= count


def test_whisper_translating_a_recording_does_not_take_its_own_transcript_back(tmp_path: Path) -> None:
    to_en = tmp_path / "to-en"
    to_en.mkdir()
    state = tmp_path / "state"
    cfg = write_config(
        tmp_path / "stenod.toml",
        top={"state_dir": state, "log_format": "json"},
        watch=[
            {"path": to_en, "task": "translate", "target_language": "en", "formats": ["txt"], "settle_seconds": 0.3}
        ],
        providers={"whisper": {"workers": 1}},
    )
    festival_speech(ITALIAN, tmp_path / "biblioteca.wav", voice="italian")
    with running(cfg, tmp_path / "daemon.log") as daemon:
        (tmp_path / "biblioteca.wav").rename(to_en / "biblioteca.wav")
        wait_for(lambda: _done(state, 1), "the translation", timeout=180)
        time.sleep(QUIET_SECONDS)
        assert daemon.alive
        assert [e["input"] for e in daemon.named("job.accepted")] == [str(to_en / "biblioteca.wav")]
    assert sorted(p.name for p in to_en.iterdir()) == ["biblioteca.txt", "biblioteca.wav"]  # no .error.json
    assert "good morning" in (to_en / "biblioteca.txt").read_text().lower()  # English, from Italian

    with running(cfg, tmp_path / "daemon.log") as daemon:  # a restart scans the folder again
        time.sleep(QUIET_SECONDS)  # ready means the folders were scanned
        assert not daemon.named("job.accepted", since_start=True)
    assert _inputs(state) == [str(to_en / "biblioteca.wav")]


def test_a_document_translator_never_translates_its_own_output_also_in_another_watched_folder(
    tmp_path: Path, journal_backend: str
) -> None:
    with fake_server("tests.fakes.translator") as url:
        _translate_into_another_watched_folder(tmp_path, url)


def _translate_into_another_watched_folder(tmp_path: Path, translator_url: str) -> None:
    to_en, to_fr = tmp_path / "to-en", tmp_path / "to-fr"
    to_en.mkdir()
    to_fr.mkdir()
    state = tmp_path / "state"
    azure = {"provider": "azure", "task": "translate", "settle_seconds": 0.3}
    cfg = write_config(
        tmp_path / "stenod.toml",
        top={"state_dir": state, "log_format": "json"},
        watch=[
            # The English translations land in the French folder, whose rule translates .txt too.
            {"path": to_en, **azure, "target_language": "en", "output_dir": to_fr},
            {"path": to_fr, **azure, "target_language": "fr"},
        ],
        providers={"azure": {"api_key": DEFAULT_API_KEY, "base_url": translator_url}},
    )
    with running(cfg, tmp_path / "daemon.log") as daemon:
        (to_en / "notes.txt").write_text("Compra il latte.\n")
        wait_for(lambda: (to_fr / "notes.en.txt").exists() and _done(state, 1), "the English translation")
        time.sleep(QUIET_SECONDS)
        assert _documents_translated(translator_url) == 1
        # The user's own document in the French folder is translated, once.
        (to_fr / "memo.txt").write_text("Call the plumber.\n")
        wait_for(lambda: (to_fr / "memo.fr.txt").exists() and _done(state, 2), "the user's document")
        time.sleep(QUIET_SECONDS)
        assert daemon.alive
    assert _inputs(state) == [str(to_en / "notes.txt"), str(to_fr / "memo.txt")]
    assert _documents_translated(translator_url) == 2
    assert not list(tmp_path.rglob("*.error.json"))

    with running(cfg, tmp_path / "daemon.log") as daemon:
        time.sleep(QUIET_SECONDS)
        assert not daemon.named("job.accepted", since_start=True)
        # A file the user puts in the place of stenod's is the user's: new work.
        (to_fr / "notes.en.txt").write_text("Buy milk and bread, please.\n")
        wait_for(lambda: (to_fr / "notes.en.fr.txt").exists(), "the user's replacement, translated")
    assert _inputs(state)[-1] == str(to_fr / "notes.en.txt")
    assert len(_inputs(state)) == 3


def test_two_daemons_on_one_journal_never_take_each_others_outputs(tmp_path: Path) -> None:
    """A cluster: both daemons watch both folders; whichever writes the translation, the
    other one knows it for stenod's from the shared journal."""
    to_en, to_fr = tmp_path / "to-en", tmp_path / "to-fr"
    to_en.mkdir()
    to_fr.mkdir()
    with fresh_database() as database, fake_server("tests.fakes.translator") as url:
        daemons = []
        for name in ("node-a", "node-b"):
            azure = {"provider": "azure", "task": "translate", "settle_seconds": 0.3}
            cfg = write_config(
                tmp_path / f"{name}.toml",
                top={"state_dir": tmp_path / name, "instance_id": name, "log_format": "json"},
                sections={"journal": {"backend": "postgresql", "url": database}},
                watch=[
                    {"path": to_en, **azure, "target_language": "en", "output_dir": to_fr},
                    {"path": to_fr, **azure, "target_language": "fr"},
                ],
                providers={"azure": {"api_key": DEFAULT_API_KEY, "base_url": url}},
            )
            daemons.append(start(Daemon(cfg, tmp_path / f"{name}.log")))
        try:
            for n in range(3):
                (to_en / f"notes{n}.txt").write_text(f"Compra il latte, {n}.\n")
            wait_for(lambda: all((to_fr / f"notes{n}.en.txt").exists() for n in range(3)), "three translations")
            time.sleep(QUIET_SECONDS)
            assert all(d.alive for d in daemons)
            accepted = [e["input"] for d in daemons for e in d.named("job.accepted")]
            assert sorted(accepted) == sorted(str(to_en / f"notes{n}.txt") for n in range(3))
            assert _documents_translated(url) == 3
        finally:
            for daemon in daemons:
                if daemon.alive:
                    daemon.terminate(timeout=30)
                daemon.kill()
