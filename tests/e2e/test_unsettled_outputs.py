"""An item's files are those of the outcome the journal records: an attempt killed after
writing its outputs and before recording them, followed by an attempt that fails, leaves the
error file alone, not the dead attempt's transcripts beside it (found by the single-daemon
chaos run on seed 869091928: a Vachana job's ``.json`` written 26 ms before a ``kill -9``,
then an ``.error.json`` from the restarted daemon's 401)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import psutil

from stenod.fault_points import PAUSE_AT
from support.harness import Daemon, running, wait_for, write_config, write_wav


def _config(tmp_path: Path, inbox: Path, *, fail_marker: str) -> Path:
    return write_config(
        tmp_path / "stenod.toml",
        top={"state_dir": tmp_path / "state", "log_format": "json"},
        watch=[{"path": inbox, "provider": "echo", "settle_seconds": 0.2, "formats": ["txt", "json", "srt"]}],
        providers={"echo": {"fail_marker": fail_marker, "ledger_dir": tmp_path}},
    )


def test_a_failure_after_a_kill_between_writing_and_recording_leaves_only_the_error_file(
    tmp_path: Path, echo_plugin: None, journal_backend: str
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    user_file = inbox / "notes.txt"  # a user's own file beside the inputs: never stenod's to remove
    user_file.write_text("mine\n")
    log = tmp_path / "daemon.log"

    # First attempt: the provider answers, the outputs are written, then the process is
    # frozen before the journal records them, and killed there.
    first = Daemon(_config(tmp_path, inbox, fail_marker="NEVER"), log, env={PAUSE_AT: "outputs.written"})
    first.start().wait_ready()
    try:
        write_wav(inbox / "call-REFUSED.wav")
        wait_for(lambda: psutil.Process(first.process.pid).status() == psutil.STATUS_STOPPED, "the freeze", 60)
        written = sorted(p.name for p in inbox.glob("call-REFUSED.*") if p.suffix != ".wav")
        assert written == ["call-REFUSED.json", "call-REFUSED.srt", "call-REFUSED.txt"]
    finally:
        first.kill()

    # Second attempt: the same provider job's last step runs again and is refused this time.
    with running(_config(tmp_path, inbox, fail_marker="REFUSED"), log) as second:
        error_file = inbox / "call-REFUSED.error.json"
        wait_for(error_file.exists, "the error file", 60)
        wait_for(lambda: second.named("item.failed"), "the failure to be recorded", 30)
        time.sleep(0.5)
        assert second.alive
        removed = second.named("output.unsettled_removed")
    assert json.loads(error_file.read_text())["error"]["code"] == "provider_rejected"
    assert sorted(p.name for p in inbox.iterdir() if p.is_file()) == [
        "call-REFUSED.error.json",
        "call-REFUSED.wav",
        "notes.txt",
    ]
    assert user_file.read_text() == "mine\n"
    assert len(removed) == 1 and len(removed[0]["paths"]) == 3
    assert not [p for p in os.listdir(inbox) if p.endswith(".stenod-tmp")]
