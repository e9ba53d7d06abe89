"""``[wyoming] keep = true``: a voice command answered over Wyoming (the ``wyoming`` package's
``AsyncTcpClient``, against ``stenod run``) is journaled as a finished job with its
transcript and no audio: in the job API, on the page, in the metrics, its CloudEvent on
RabbitMQ, and forgotten by the results retention. Once on SQLite, once on PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.amqp import BrokerNames, Client, delete_topology
from support.harness import Daemon, running, wait_for, write_config
from support.postgres import fresh_database
from support.server import free_port
from support.speech import festival_pcm
from tests.e2e.test_wyoming import KITCHEN, command, transcript, words

pytestmark = pytest.mark.timeout(300)

KEEP_DAYS = 0.0004  # 35 s: long enough to read a command back, short enough to see it go


@dataclass
class Kept:
    daemon: Daemon
    port: int
    http: str
    state: Path
    broker: Client
    events: str  # a queue bound to the daemon's event exchange


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def kept(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kept]:
    tmp = tmp_path_factory.mktemp(f"kept-{request.param}")
    port, http = free_port(), free_port()
    names = BrokerNames.new(f"wyoming-kept-{request.param}")
    with contextlib.ExitStack() as stack:
        sections = {
            "http": {"listen": f"127.0.0.1:{http}", "keep_results_days": KEEP_DAYS},
            "wyoming": {"listen": f"127.0.0.1:{port}", "zeroconf": False, "keep": True},
            "amqp": names.amqp_section(),
        }
        if request.param == "postgresql":
            sections["journal"] = {"backend": "postgresql", "url": stack.enter_context(fresh_database())}
        config = write_config(
            tmp / "stenod.toml",
            top={"state_dir": tmp / "state", "log_format": "json"},
            sections=sections,
            providers={"whisper": {"workers": 1}},
        )
        daemon = stack.enter_context(running(config, tmp / "daemon.log"))
        stack.callback(delete_topology, names)
        broker = Client(names)
        stack.callback(broker.close)
        wait_for(lambda: daemon.named("amqp.relay_ready"), "the event exchange declared", 60)
        yield Kept(daemon, port, f"http://127.0.0.1:{http}", tmp / "state", broker, broker.bind_events())


async def kept_job(k: Kept, phrase: str) -> dict[str, Any]:
    """Speak ``phrase``; the job the journal keeps for it (read through the job API)."""
    heard = transcript(await command(k.port, festival_pcm(phrase)))
    assert words(heard) == phrase
    async with httpx.AsyncClient(base_url=k.http) as http:
        for _ in range(100):  # the write follows the answer
            listed = (await http.get("/v1/jobs", params={"limit": 50})).json()["jobs"]
            for entry in (j for j in listed if j["source"] == "wyoming"):
                job: dict[str, Any] = (await http.get(f"/v1/jobs/{entry['job_id']}")).json()
                if job["items"][0]["transcript"]["text"] == heard:
                    return job
            await asyncio.sleep(0.1)
    raise AssertionError(f"no job kept for {phrase!r}: {listed}")


async def test_a_command_is_kept_as_a_succeeded_job_with_its_transcript(kept: Kept) -> None:
    job = await kept_job(kept, KITCHEN)
    assert (job["state"], job["provider"], job["task"], job["language"]) == ("succeeded", "whisper", "transcribe", "en")
    [item] = job["items"]
    assert item["input"] == "voice command from 127.0.0.1" and item["outputs"] == []
    async with httpx.AsyncClient(base_url=kept.http) as http:
        txt = await http.get(f"/v1/jobs/{job['job_id']}/outputs/txt")
        srt = await http.get(f"/v1/jobs/{job['job_id']}/outputs/srt")
        page = await http.get("/")
    assert words(txt.text) == KITCHEN and "-->" in srt.text
    assert job["job_id"] in page.text and "voice command from 127.0.0.1" in page.text


async def test_no_audio_of_a_kept_command_is_written(kept: Kept) -> None:
    await kept_job(kept, "open the garage door")
    written = [p for p in kept.state.rglob("*") if p.is_file() and p.suffix in (".wav", ".pcm", ".flac", ".raw")]
    assert written == [] and not any((kept.state / "wyoming").glob("*"))


async def test_its_cloudevent_is_published_and_it_is_counted(kept: Kept) -> None:
    job = await kept_job(kept, "close the curtains in the bedroom")
    events = await asyncio.to_thread(
        kept.broker.events, kept.events, lambda got: any(e["subject"] == job["job_id"] for e in got)
    )
    [event] = [e for e in events if e["subject"] == job["job_id"]]
    assert event["type"] == "stenod.job.succeeded" and event["_amqp"]["routing_key"] == "job.succeeded.whisper"
    assert words(event["data"]["items"][0]["transcript"]["text"]) == "close the curtains in the bedroom"
    async with httpx.AsyncClient(base_url=kept.http) as http:
        metrics = (await http.get("/metrics")).text
    assert 'stenod_items_total{provider="whisper",state="succeeded"}' in metrics


async def test_the_answer_goes_out_before_the_journal_write(kept: Kept) -> None:
    await kept_job(kept, "lock the front door")
    answered = kept.daemon.named("wyoming.command_answered")[-1]
    recorded = kept.daemon.named("wyoming.command_kept")[-1]
    assert answered["timestamp"] <= recorded["timestamp"] and recorded["journal_seconds"] >= 0


async def test_a_kept_command_is_forgotten_after_keep_results_days(kept: Kept) -> None:
    job = await kept_job(kept, "turn the television off")
    await asyncio.to_thread(
        wait_for,
        lambda: any(e["job_id"] == job["job_id"] for e in kept.daemon.named("results.removed")),
        "the kept command forgotten",
        120,
    )
    async with httpx.AsyncClient(base_url=kept.http) as http:
        gone = await http.get(f"/v1/jobs/{job['job_id']}")
    assert gone.status_code == 410 and gone.json()["error"]["code"] == "job_expired"
