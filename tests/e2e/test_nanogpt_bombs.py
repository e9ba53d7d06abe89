"""Decompression bombs against the nanogpt plugin of a running daemon (issue #24, item 5):
a recording is measured and transcoded (decoded) before its upload; that happens in the
core's memory-capped child process, never in the daemon, and ends at ``max_audio_seconds``
(3 h by default). Four hours of Opus silence that hide their length (a live WebM: only
decoding can tell) end as a clear ``too_long`` item error and nothing is uploaded; four hours
that say so in their header are refused before any decoding. The legitimate file beside
them is still transcribed. Against the NanoGPT fake in its own process."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.harness import Daemon, fake_server, start, wait_for, watch_config, write_wav
from tests.audio_bombs import opus_silence

KEY = "e2e-nanogpt-key"
DAEMON_CPU_SECONDS = 5.0  # the daemon's own share while the bombs are handled; decoding 3 h takes ~12 s
DAEMON_PEAK_BYTES = 600 << 20

pytestmark = pytest.mark.slow


@pytest.fixture
def nanogpt_url() -> Iterator[str]:
    with fake_server("tests.fakes.nanogpt", "--api-key", KEY) as url:
        yield url


@pytest.fixture
def daemon(tmp_path: Path, nanogpt_url: str) -> Iterator[Daemon]:
    config = watch_config(tmp_path, "nanogpt", f"{nanogpt_url}/api", KEY, {}, 1.0)
    running = Daemon(config, tmp_path / "daemon.log")
    yield running
    running.kill()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time ``pid`` itself has used (its children's are not counted)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) * 1024


def _children(pid: int) -> list[int]:
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
        if parent == pid:
            found.append(int(entry))
    return found


def _error(inbox: Path, stem: str) -> dict[str, Any]:
    path = inbox / f"{stem}.error.json"
    wait_for(path.exists, path.name, timeout=240)
    error: dict[str, Any] = json.loads(path.read_text())["error"]
    return error


def test_opus_bombs_cost_the_daemon_nothing_and_end_as_item_errors_with_nothing_uploaded(
    daemon: Daemon, nanogpt_url: str, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    staging = tmp_path / "staging"
    staging.mkdir()
    hidden = opus_silence(staging / "hidden.webm", 4 * 3600, declared=False)
    declared = opus_silence(staging / "declared.ogg", 4 * 3600)
    start(daemon)
    assert daemon.proc is not None
    pid = daemon.proc.pid
    cpu_before = _cpu_seconds(pid)
    hidden.rename(inbox / hidden.name)
    declared.rename(inbox / declared.name)
    hidden_error, declared_error = _error(inbox, "hidden"), _error(inbox, "declared")
    daemon_cpu = _cpu_seconds(pid) - cpu_before
    decoders = {child: _cpu_seconds(child) for child in _children(pid)}

    assert hidden_error["code"] == "too_long" and "more than 3.0 h" in hidden_error["message"], hidden_error
    assert "max_audio_seconds" in hidden_error["hint"]
    assert declared_error["code"] == "over_limit" and "14400 s" in declared_error["message"], declared_error
    assert not list(inbox.glob("hidden.txt")) and not list(inbox.glob("declared.txt"))
    assert httpx.get(f"{nanogpt_url}/__fake__/stats").json()["uploads"] == []  # nothing sent, nothing billed
    assert daemon_cpu < DAEMON_CPU_SECONDS, (daemon_cpu, decoders)
    assert max(decoders.values()) > daemon_cpu, (daemon_cpu, decoders)  # the decoding was a child's work
    assert _peak_bytes(pid) < DAEMON_PEAK_BYTES

    write_wav(inbox / "speech.wav", seconds=2.0)  # the legitimate recording beside them
    wait_for((inbox / "speech.txt").exists, "speech.txt", timeout=120)
    assert [u["filename"] for u in httpx.get(f"{nanogpt_url}/__fake__/stats").json()["uploads"]] == ["speech.wav"]
    assert daemon.alive
