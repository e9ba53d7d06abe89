"""``stenod run`` as a process, watching a folder, against the fake Vachana server in its own process."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.harness import Daemon, fake_server, start, wait_for, watch_config, write_wav

KEY = "e2e-vachana-key"
INTERVAL = 1.0  # the fake's poll interval, shortened from Vachana's 60 s

pytestmark = pytest.mark.slow


@pytest.fixture
def vachana_url() -> Iterator[str]:
    with fake_server("tests.fakes.vachana", "--api-key", KEY, "--poll-interval", str(INTERVAL)) as url:
        yield url


@pytest.fixture
def daemon(tmp_path: Path, vachana_url: str) -> Iterator[Daemon]:
    config = watch_config(tmp_path, "vachana", vachana_url, KEY, {}, INTERVAL)
    running = Daemon(config, tmp_path / "daemon.log")
    yield running
    running.kill()


def stats(url: str) -> dict[str, Any]:
    return dict(httpx.get(f"{url}/__fake__/stats").json())


def inject(url: str, *rules: dict[str, Any]) -> None:
    httpx.post(f"{url}/__fake__/faults", json={"rules": list(rules)}).raise_for_status()


def test_dropped_recording_gets_outputs_with_speakers_and_sentiment(
    daemon: Daemon, vachana_url: str, tmp_path: Path
) -> None:
    start(daemon)
    write_wav(tmp_path / "inbox" / "call.wav")
    srt = tmp_path / "inbox" / "call.srt"
    wait_for(srt.exists, "call.srt")
    transcript = json.loads((tmp_path / "inbox" / "call.json").read_text())
    assert transcript["provider"] == "vachana"
    assert {s["speaker"] for s in transcript["segments"]} == {"1", "2"}
    assert sorted(s["label"] for s in transcript["speakers"]) == ["1", "2"]  # one shape for every provider
    assert {"sentiment", "emotion", "language_detected"} <= set(transcript["segments"][0]["extra"])
    assert srt.read_text().count("-->") == len(transcript["segments"])
    assert stats(vachana_url)["status_rejected"] == {job: 0 for job in stats(vachana_url)["jobs"]}


def test_kill_9_while_polling_then_restart_finishes_the_same_job_once(
    daemon: Daemon, vachana_url: str, tmp_path: Path
) -> None:
    inject(vachana_url, {"route": "status", "delay": 3})
    start(daemon)
    write_wav(tmp_path / "inbox" / "call.wav")
    wait_for(lambda: stats(vachana_url)["calls"].get("status"), "the first status call")
    daemon.kill()
    start(daemon)
    wait_for((tmp_path / "inbox" / "call.json").exists, "call.json after the restart")
    assert stats(vachana_url)["jobs_created"] == 1
    assert len(daemon.named("item.succeeded")) == 1


def test_kill_9_after_the_upload_was_sent_is_not_submitted_twice(
    daemon: Daemon, vachana_url: str, tmp_path: Path
) -> None:
    inject(vachana_url, {"route": "submit", "delay": 4})
    start(daemon)
    write_wav(tmp_path / "inbox" / "call.wav")
    wait_for(lambda: stats(vachana_url)["calls"].get("submit"), "the submit call")
    time.sleep(1.5)  # let the (small) body reach the server, as a crash "during the answer" needs
    daemon.kill()
    start(daemon)
    error_file = tmp_path / "inbox" / "call.error.json"
    wait_for(error_file.exists, "call.error.json after the restart")
    error = json.loads(error_file.read_text())
    assert error["error"]["code"] == "vachana_submit_uncertain"
    assert "X-API-Request-ID stenod-" in error["error"]["message"]
    assert stats(vachana_url)["calls"]["submit"] == 1
