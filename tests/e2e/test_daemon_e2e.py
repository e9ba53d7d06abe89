"""``stenod run`` as a process: real speech in a watched folder, kill -9, SIGTERM, bad input."""

from __future__ import annotations

import json
import os
import random
import re
import sqlite3
import subprocess
import time
from pathlib import Path

import jiwer
import psutil
import psycopg

from support.harness import STENOD, Daemon, running, wait_for, write_config
from support.speech import SENTENCES, synthesise_sentences, write_slowly
from tests.journal_rows import rows

# Measured on this project's test voice (support/speech.py): 0.00–0.11 per sentence, 0.04 over
# the five sentences together through the daemon. The bound leaves room for other machines.
WER_BOUND = 0.25
OUTPUTS = ("json", "srt", "txt", "vtt")


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z' ]", " ", text.lower()).split())


def config(tmp: Path, inbox: Path, **rule) -> Path:
    return write_config(
        tmp / "stenod.toml",
        top={"state_dir": tmp / "state", "log_format": "json", "shutdown_grace_seconds": 10},
        watch=[{"path": inbox, "settle_seconds": 1.0, **rule}],
    )


def test_speech_written_slowly_into_a_watched_folder_yields_all_four_outputs(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    source = synthesise_sentences(SENTENCES, tmp_path / "memo.wav")
    with running(config(tmp_path, inbox), tmp_path / "daemon.log") as daemon:
        write_slowly(inbox / "memo.wav", source.read_bytes(), chunks=8, delay=0.3)
        wait_for(lambda: all((inbox / f"memo.{ext}").exists() for ext in OUTPUTS), "outputs", timeout=180)
        assert daemon.alive
    produced = sorted(p.name for p in inbox.iterdir())
    assert produced == ["memo.json", "memo.srt", "memo.txt", "memo.vtt", "memo.wav"]
    data = json.loads((inbox / "memo.json").read_text())
    wer = jiwer.wer(normalise(" ".join(SENTENCES)), normalise(data["text"]))
    assert wer <= WER_BOUND, (wer, data["text"])
    starts = [s["start"] for s in data["segments"]]
    assert starts == sorted(starts) and data["segments"][-1]["end"] <= data["duration"] + 0.5
    assert (inbox / "memo.vtt").read_text().startswith("WEBVTT")
    assert len(daemon.named("job.accepted")) == 1  # taken once, after the last write


def _succeeded_inputs(state: Path) -> list[str]:
    return sorted(r[0] for r in rows(state, "SELECT input FROM items WHERE state = 'succeeded'"))


def test_kill_9_during_recognition_then_restart_gives_each_output_once(tmp_path, journal_backend):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    names = [f"talk{n}.wav" for n in range(3)]
    for name in names:
        synthesise_sentences(SENTENCES * 3, tmp_path / name)
    cfg = config(tmp_path, inbox)
    log = tmp_path / "daemon.log"
    first = Daemon(cfg, log).start()
    try:
        first.wait_ready()
        for name in names:
            os.replace(tmp_path / name, inbox / name)
        wait_for(lambda: len(first.named("batch.submitted") + first.named("job.accepted")) >= 3, "intake", 60)
        time.sleep(1.0)  # recognition under way
        assert not first.named("item.succeeded") or len(first.named("item.succeeded")) < 3
        workers = [p.pid for p in psutil.Process(first.process.pid).children(recursive=True)]
    finally:
        first.kill()
    # The orphaned workers notice their parent is gone and exit (no zombies, no stray CPU).
    wait_for(
        lambda: (
            not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in workers)
        ),
        "orphaned workers to exit",
        timeout=120,
    )
    with running(cfg, log) as second:
        wait_for(lambda: len(_succeeded_inputs(tmp_path / "state")) == 3, "all three transcribed", timeout=300)
        assert second.alive
    events = Daemon(cfg, log).events()
    done_per_input: dict[str, int] = {}
    for e in events:
        if e.get("event") == "item.succeeded":
            done_per_input[Path(e["input"]).name] = done_per_input.get(Path(e["input"]).name, 0) + 1
    assert done_per_input == {name: 1 for name in names}
    leftovers = [p.name for p in inbox.iterdir() if "stenod-tmp" in p.name]
    assert leftovers == []
    assert sorted(p.name for p in inbox.iterdir()) == sorted(
        f"talk{n}.{ext}" for n in range(3) for ext in (*OUTPUTS, "wav")
    )


def test_sigterm_exits_0_within_the_grace_time_and_the_job_resumes_once(tmp_path, echo_plugin, journal_backend):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = write_config(
        tmp_path / "stenod.toml",
        top={"state_dir": tmp_path / "state", "log_format": "json", "shutdown_grace_seconds": 3},
        watch=[{"path": inbox, "provider": "echo", "settle_seconds": 0.2}],
        providers={"echo": {"job_seconds": 4, "ledger_dir": tmp_path}},
    )
    log = tmp_path / "daemon.log"
    daemon = Daemon(cfg, log).start()
    try:
        daemon.wait_ready()
        (inbox / "long.wav").write_bytes(b"RIFF" + b"\0" * 100)
        wait_for(lambda: daemon.named("batch.submitted"), "the job to be submitted", 30)
        started = time.monotonic()
        assert daemon.terminate(timeout=30) == 0
        assert time.monotonic() - started < 3 + 5
    finally:
        daemon.kill()
    with running(cfg, log):
        wait_for(lambda: (inbox / "long.txt").exists(), "the resumed job", 60)
    assert (tmp_path / "created.log").read_text().count("\n") == 1  # one remote job, resumed


def test_no_config_at_all_watches_inbox_with_the_offline_provider(tmp_path, clean_env):
    env = {k: v for k, v in os.environ.items() if not k.startswith("STENOD_")}
    with running(tmp_path / "absent.toml", tmp_path / "daemon.log", env=env, cwd=tmp_path, args=[]) as daemon:
        ready = daemon.named("daemon.ready")[0]
        assert ready["watching"] == [str(tmp_path / "inbox")] and "whisper" in ready["providers"]
        assert (tmp_path / "inbox").is_dir()
        synthesise_sentences(SENTENCES[:1], tmp_path / "inbox" / "hello.wav")
        wait_for(lambda: (tmp_path / "inbox" / "hello.txt").exists(), "the transcript", timeout=120)


def test_bad_input_gets_a_clear_error_and_the_daemon_keeps_running(tmp_path, echo_plugin):
    inbox, other = tmp_path / "inbox", tmp_path / "broken-rule"
    inbox.mkdir()
    other.mkdir()
    cfg = write_config(
        tmp_path / "stenod.toml",
        top={"state_dir": tmp_path / "state", "log_format": "json"},
        watch=[
            {"path": inbox, "settle_seconds": 0.5},
            {"path": tmp_path / "does-not-exist", "settle_seconds": 0.5},
            {"path": other, "provider": "nosuch", "settle_seconds": 0.5},
        ],
        providers={"whisper": {"workers": 1}},
    )
    with running(cfg, tmp_path / "daemon.log") as daemon:
        (inbox / "empty.wav").write_bytes(b"")
        (inbox / "noise.wav").write_bytes(random.Random(5).randbytes(50_000))  # fixed: libav reads some noise as lyrics
        (inbox / "notes.mp3").write_text("this is a shopping list, not a recording\n")
        good = synthesise_sentences(SENTENCES[:1], tmp_path / "good.wav").read_bytes()
        (inbox / "cut.wav").write_bytes(good[: len(good) // 3][:60])  # a header and a few samples
        (inbox / "doc.pdf").write_bytes(b"%PDF-1.4")
        (inbox / "gone.wav").write_bytes(b"soon deleted")
        (inbox / "gone.wav").unlink()
        (other / "x.wav").write_bytes(b"RIFF")
        expected = {
            inbox / "empty.error.json": "empty_file",
            inbox / "noise.error.json": "not_audio",
            inbox / "notes.error.json": "not_audio",
            inbox / "doc.error.json": "unsupported_format",
            other / "x.error.json": "unknown_provider",
        }
        wait_for(lambda: all(p.exists() for p in expected), "error files", timeout=120)
        for path, code in expected.items():
            body = json.loads(path.read_text())
            assert body["error"]["code"] == code, (path.name, body)
            assert body["what_to_do"] and body["error"]["message"]
        wait_for(lambda: (inbox / "cut.error.json").exists() or (inbox / "cut.txt").exists(), "truncated file", 60)
        assert daemon.named("watch.path_missing")
        (inbox / "fine.wav").write_bytes(good)
        wait_for(lambda: (inbox / "fine.txt").exists(), "a good file after the bad ones", timeout=120)
        assert daemon.alive
        assert not (inbox / "gone.error.json").exists()


def test_jobs_and_job_commands_read_the_journal(tmp_path, echo_plugin, journal_backend):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = write_config(
        tmp_path / "stenod.toml",
        top={"state_dir": tmp_path / "state", "log_format": "json"},
        watch=[{"path": inbox, "provider": "echo", "settle_seconds": 0.2}],
    )
    with running(cfg, tmp_path / "daemon.log"):
        (inbox / "a.wav").write_bytes(b"a")
        (inbox / "FAIL.wav").write_bytes(b"b")
        wait_for(lambda: (inbox / "a.txt").exists() and (inbox / "FAIL.error.json").exists(), "both jobs", 30)
    listing = subprocess.run(
        [*STENOD, "jobs", "--config", str(cfg), "--json"], capture_output=True, text=True, check=True
    )
    jobs = {Path(j["items"][0]["input"]).name: j for j in json.loads(listing.stdout)}
    assert jobs["a.wav"]["state"] == "succeeded" and jobs["FAIL.wav"]["state"] == "failed"
    failed = subprocess.run(
        [*STENOD, "job", jobs["FAIL.wav"]["job_id"], "--config", str(cfg)], capture_output=True, text=True
    )
    assert failed.returncode == 1 and "echo refused FAIL.wav" in failed.stdout


def test_a_transcribe_then_translate_rule_yields_the_transcript_and_its_translation_in_one_job(tmp_path, echo_plugin):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = write_config(
        tmp_path / "stenod.toml",
        top={"state_dir": tmp_path / "state", "log_format": "json"},
        watch=[
            {
                "path": inbox,
                "provider": "echo",
                "settle_seconds": 0.2,
                "formats": ["json"],
                "then_translate_to": ["fr", "de"],
                "translate_provider": "echo",
                "after": "move",
            }
        ],
    )
    with running(cfg, tmp_path / "daemon.log"):
        (inbox / "call.wav").write_bytes(b"RIFF-call")
        done = inbox / "done"
        wait_for(lambda: (done / "call.fr.txt").exists() and (done / "call.de.txt").exists(), "translations", 30)
    assert sorted(p.name for p in done.iterdir()) == ["call.de.txt", "call.fr.txt", "call.json", "call.txt", "call.wav"]
    assert (done / "call.fr.txt").read_text().startswith("[fr] Speaker 0: echo call.wav")
    listing = subprocess.run(
        [*STENOD, "jobs", "--config", str(cfg), "--json"], capture_output=True, text=True, check=True
    )
    [job] = json.loads(listing.stdout)
    assert job["state"] == "succeeded" and [i["state"] for i in job["items"]] == ["succeeded", "succeeded"]
    assert job["items"][0]["transcript"]["text"] == "echo call.wav 9 bytes"
    assert sorted(Path(o).name for o in job["items"][1]["outputs"]) == ["call.de.txt", "call.fr.txt"]


def test_a_journal_from_a_newer_stenod_stops_the_start_with_exit_2(tmp_path, journal_backend):
    state = tmp_path / "state"
    state.mkdir()
    if journal_backend == "postgresql":
        url = os.environ["STENOD_JOURNAL__URL"]
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE stenod_schema (version INTEGER NOT NULL)")
            conn.execute("INSERT INTO stenod_schema VALUES (999)")
    else:
        db = sqlite3.connect(state / "journal.db")
        db.execute("PRAGMA user_version = 999")
        db.close()
    cfg = write_config(tmp_path / "stenod.toml", top={"state_dir": state, "log_format": "json"})
    proc = subprocess.run([*STENOD, "run", "--config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "written by a newer stenod" in proc.stderr, proc.stderr[-2000:]
