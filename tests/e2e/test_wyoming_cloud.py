"""Cloud providers behind the Wyoming listener: ``stenod run`` with Sarvam pointed at its
fake (which follows Sarvam's batch API) and NanoGPT pointed at a port nobody listens on,
driven by the ``wyoming`` package's ``AsyncTcpClient``. A command naming Sarvam gets
Sarvam's transcript; a provider that errs, hangs or is down answers with a Wyoming
``error`` a person can read, on a connection that stays open for the next command."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event

from support.harness import Daemon, fake_server, running, write_config
from support.server import free_port
from support.speech import festival_pcm

pytestmark = pytest.mark.timeout(300)

KEY = "wyoming-sarvam-key"
PCM = festival_pcm("turn on the kitchen light")
SARVAM_TEXT = " ".join(f"Sentence {k + 1} of command ({len(PCM) + 44} bytes)." for k in range(2 + (len(PCM) + 44) % 3))


@dataclass
class Cloud:
    daemon: Daemon
    port: int
    sarvam: str  # the fake's URL


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    tmp = tmp_path_factory.mktemp("wyoming-cloud")
    port = free_port()
    with fake_server("tests.fakes.sarvam", "--api-key", KEY) as sarvam:
        config = write_config(
            tmp / "stenod.toml",
            top={"state_dir": tmp / "state", "log_format": "json"},
            sections={"wyoming": {"listen": f"127.0.0.1:{port}", "zeroconf": False, "command_timeout_seconds": 5}},
            providers={
                "whisper": {"workers": 1},
                "sarvam": {"api_key": KEY, "base_url": sarvam, "poll_interval_seconds": 0.2},
                "nanogpt": {"api_key": "nano-key", "base_url": f"http://127.0.0.1:{free_port()}"},  # nobody there
            },
        )
        with running(config, tmp / "daemon.log") as daemon:
            yield Cloud(daemon, port, sarvam)


@pytest_asyncio.fixture
async def client(cloud: Cloud) -> AsyncIterator[AsyncTcpClient]:
    """One connection for the whole test, as a satellite keeps it."""
    await inject(cloud)
    async with AsyncTcpClient("127.0.0.1", cloud.port) as connected:
        yield connected


async def inject(cloud: Cloud, **rule: Any) -> None:
    """The fake's faults from now on: this rule (none: no fault)."""
    async with httpx.AsyncClient() as http:
        (await http.post(f"{cloud.sarvam}/__fake__/faults", json={"rules": [rule] if rule else []})).raise_for_status()


async def speak(client: AsyncTcpClient, name: str, language: str = "hi-IN") -> Event:
    """One command on ``client``'s connection; the transcript or error event that ends it."""
    await client.write_event(Transcribe(name=name, language=language).event())
    await client.write_event(AudioStart(rate=16000, width=2, channels=1).event())
    for start in range(0, len(PCM), 3200):
        await client.write_event(AudioChunk(16000, 2, 1, PCM[start : start + 3200]).event())
    await client.write_event(AudioStop().event())
    while True:
        event = await asyncio.wait_for(client.read_event(), 60)
        assert event is not None, "the connection was dropped"
        if Transcript.is_type(event.type) or Error.is_type(event.type):
            return event


async def test_a_command_naming_sarvam_gets_sarvams_transcript(cloud: Cloud, client: AsyncTcpClient) -> None:
    event = await speak(client, "sarvam")
    assert Transcript.is_type(event.type), event
    assert Transcript.from_event(event).text == SARVAM_TEXT
    async with httpx.AsyncClient() as http:
        stats = (await http.get(f"{cloud.sarvam}/__fake__/stats")).json()
    assert stats["jobs_started"] >= 1


async def test_sarvam_answering_503_is_an_error_event_and_the_connection_serves_the_next(
    cloud: Cloud, client: AsyncTcpClient
) -> None:
    await inject(cloud, route="init", status=503, times=1)
    error = Error.from_event(await speak(client, "sarvam"))
    assert "sarvam" in error.text and "503" in error.text, error
    after = await speak(client, "sarvam")  # the same connection, the provider back
    assert Transcript.from_event(after).text == SARVAM_TEXT


async def test_sarvam_refusing_the_key_says_so(cloud: Cloud, client: AsyncTcpClient) -> None:
    await inject(cloud, route="init", status=403, code="invalid_api_key_error", times=1)
    error = Error.from_event(await speak(client, "sarvam"))
    assert "sarvam" in error.text.lower() and "key" in error.text.lower(), error


async def test_sarvam_slower_than_the_command_timeout_is_an_error_event(cloud: Cloud, client: AsyncTcpClient) -> None:
    await inject(cloud, route="status", delay=8, times=None)
    error = Error.from_event(await speak(client, "sarvam"))
    assert error.text == "sarvam did not answer within 5 s", error


async def test_a_provider_that_is_down_is_an_error_event_not_a_dropped_connection(
    cloud: Cloud, client: AsyncTcpClient
) -> None:
    error = Error.from_event(await speak(client, "nanogpt", language="en"))
    assert error.text.startswith("nanogpt unreachable: no connection could be made"), error
    after = await speak(client, "sarvam")
    assert Transcript.from_event(after).text == SARVAM_TEXT
    assert cloud.daemon.alive and not cloud.daemon.named("wyoming.session_failed")
