"""``stenod run`` as a process, watching a folder, against the fake Sarvam server in its own process.

Includes kill -9 of the daemon at each step of the Sarvam job flow, then a restart.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.harness import Daemon, fake_server, start, wait_for, watch_config, write_wav

ROOT = Path(__file__).resolve().parents[2]
KEY = "e2e-sarvam-key"

pytestmark = pytest.mark.slow


@pytest.fixture
def sarvam_url() -> Iterator[str]:
    with fake_server("tests.fakes.sarvam", "--api-key", KEY) as url:
        yield url


@pytest.fixture
def daemon(tmp_path: Path, sarvam_url: str) -> Iterator[Daemon]:
    # Who spoke, asked as every provider is asked: Sarvam's own with_diarization follows.
    config = watch_config(tmp_path, "sarvam", sarvam_url, KEY, {}, 0.2, diarize=True, num_speakers=2)
    running = Daemon(config, tmp_path / "daemon.log")
    yield running
    running.kill()


def stats(url: str) -> dict[str, Any]:
    return dict(httpx.get(f"{url}/__fake__/stats").json())


def inject(url: str, *rules: dict[str, Any]) -> None:
    httpx.post(f"{url}/__fake__/faults", json={"rules": list(rules)}).raise_for_status()


def test_dropped_recording_gets_outputs_with_speakers_beside_it(daemon: Daemon, tmp_path: Path) -> None:
    start(daemon)
    write_wav(tmp_path / "inbox" / "call.wav")
    srt = tmp_path / "inbox" / "call.srt"
    wait_for(srt.exists, "call.srt")
    transcript = json.loads((tmp_path / "inbox" / "call.json").read_text())
    assert transcript["provider"] == "sarvam"
    assert {s["speaker"] for s in transcript["segments"]} == {"0", "1"}
    assert sorted(s["label"] for s in transcript["speakers"]) == ["0", "1"]  # one shape for every provider
    assert "Sentence 1 of call" in (tmp_path / "inbox" / "call.txt").read_text()
    assert srt.read_text().count("-->") == len(transcript["segments"])
    assert "0" in srt.read_text().split("\n\n")[0].splitlines()[2]  # the first cue names its speaker


@pytest.mark.parametrize("route", ["upload_files", "blob_put", "start", "status", "download_files", "blob_get"])
def test_kill_9_at_any_step_then_restart_finishes_the_same_job_once(
    daemon: Daemon, sarvam_url: str, tmp_path: Path, route: str
) -> None:
    inject(sarvam_url, {"route": route, "delay": 4})
    start(daemon)
    write_wav(tmp_path / "inbox" / "call.wav")
    wait_for(lambda: stats(sarvam_url)["calls"].get(route), f"the daemon to reach {route}")
    daemon.kill()
    start(daemon)
    wait_for(lambda: (tmp_path / "inbox" / "call.json").exists(), "call.json after the restart")
    counts = stats(sarvam_url)
    assert (counts["jobs_created"], counts["jobs_started"]) == (1, 1)
    assert len(daemon.named("item.succeeded")) == 1


def test_kill_9_while_the_job_is_being_created_leaves_at_most_an_empty_unstarted_job(
    daemon: Daemon, sarvam_url: str, tmp_path: Path
) -> None:
    inject(sarvam_url, {"route": "init", "delay": 2})
    start(daemon)
    write_wav(tmp_path / "inbox" / "call.wav")
    wait_for(lambda: stats(sarvam_url)["calls"].get("init"), "the daemon to create the job")
    daemon.kill()
    start(daemon)
    wait_for(lambda: (tmp_path / "inbox" / "call.json").exists(), "call.json after the restart")
    jobs = stats(sarvam_url)["jobs"].values()
    assert sum(job["starts"] for job in jobs) == 1
    assert all(job["starts"] or (job["state"] == "Accepted" and not job["uploads"]) for job in jobs)


def job_status_calls(url: str) -> list[float]:
    (calls,) = stats(url)["status_calls"].values()
    return sorted(calls)


def test_status_calls_over_a_job_are_within_one_of_the_minimum(daemon: Daemon, sarvam_url: str, tmp_path: Path) -> None:
    interval, duration = 0.2, 2.0  # the daemon's poll interval; how long each fake job runs
    httpx.post(f"{sarvam_url}/__fake__/config", json={"seconds_to_complete": duration}).raise_for_status()
    start(daemon)
    write_wav(tmp_path / "inbox" / "call.wav")
    wait_for((tmp_path / "inbox" / "call.json").exists, "call.json")
    calls = job_status_calls(sarvam_url)
    assert len(calls) <= round(duration / interval) + 1
    assert min(b - a for a, b in itertools.pairwise(calls)) >= interval * 0.9


def test_after_a_429_the_next_status_call_waits_for_retry_after(
    daemon: Daemon, sarvam_url: str, tmp_path: Path
) -> None:
    inject(sarvam_url, {"route": "status", "status": 429, "retry_after": 2})
    start(daemon)
    write_wav(tmp_path / "inbox" / "call.wav")
    wait_for((tmp_path / "inbox" / "call.json").exists, "call.json")
    first, second, *_ = job_status_calls(sarvam_url)
    assert second - first >= 2 * 0.95
