"""A daemon killed (-9) while a provider is saying who spoke: after the restart the same
provider job finishes once, with the speakers, and nothing is asked twice. (The offline
engine's own worker killed mid-diarization is the engine's test.)"""

from __future__ import annotations

import json
from pathlib import Path

from support.harness import Daemon, running, wait_for, write_config, write_wav


def test_kill_9_while_a_provider_diarizes_then_restart_finishes_the_same_job_once_with_speakers(
    tmp_path: Path, journal_backend: str
) -> None:
    inbox, ledger = tmp_path / "inbox", tmp_path / "ledger"
    inbox.mkdir()
    ledger.mkdir()
    config = write_config(
        tmp_path / "stenod.toml",
        top={"state_dir": tmp_path / "state", "log_format": "json"},
        watch=[{"path": inbox, "provider": "echo", "diarize": True, "max_speakers": 3, "settle_seconds": 0.2}],
        providers={"echo": {"ledger_dir": ledger, "job_seconds": 4.0}},
    )
    log = tmp_path / "daemon.log"
    first = Daemon(config, log).start()
    try:
        first.wait_ready()
        write_wav(inbox / "voices-ada-bea-ada.wav", seconds=0.2)
        wait_for(lambda: (ledger / "diarization.log").exists(), "the provider job to start", timeout=60)
    finally:
        first.kill()
    assert not (inbox / "voices-ada-bea-ada.json").exists()
    with running(config, log):
        wait_for(lambda: (inbox / "voices-ada-bea-ada.json").exists(), "the outputs after the restart", timeout=60)
    data = json.loads((inbox / "voices-ada-bea-ada.json").read_text())
    assert [s["label"] for s in data["speakers"]] == ["SPEAKER_00", "SPEAKER_01"]
    assert len((ledger / "created.log").read_text().splitlines()) == 1  # the same provider job, continued
    asked = [json.loads(line) for line in (ledger / "diarization.log").read_text().splitlines()]
    assert [a["max_speakers"] for a in asked] == [3]
