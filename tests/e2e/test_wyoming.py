"""The Wyoming listener as Home Assistant meets it: ``stenod run`` with ``[wyoming] listen``,
driven by the ``wyoming`` package's own ``AsyncTcpClient``; commands spoken by espeak-ng
and Festival. One daemon serves the whole module."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import numpy
import psutil
import pytest
from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncZeroconf

from support.harness import STENOD, Daemon, running, write_config
from support.server import free_port
from support.speech import festival_pcm, synthesise_pcm

pytestmark = pytest.mark.timeout(300)

ZEROCONF_NAME = f"stenod-test-{free_port()}"
KITCHEN = "turn on the kitchen light"


class Listener:
    def __init__(self, daemon: Daemon, port: int, http: str, state: Path) -> None:
        self.daemon, self.port, self.http, self.state = daemon, port, http, state


@pytest.fixture(scope="module")
def listener(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Listener]:
    tmp = tmp_path_factory.mktemp("wyoming")
    port, http = free_port(), free_port()
    config = write_config(
        tmp / "stenod.toml",
        top={"state_dir": tmp / "state", "log_format": "json"},
        sections={
            "http": {"listen": f"127.0.0.1:{http}"},
            "wyoming": {"listen": f"0.0.0.0:{port}", "zeroconf_name": ZEROCONF_NAME, "max_command_seconds": 10},
        },
        providers={"whisper": {"workers": 1, "idle_unload_seconds": 1}, "echo": {"job_seconds": 0.3}},
    )
    with running(config, tmp / "daemon.log") as daemon:
        yield Listener(daemon, port, f"http://127.0.0.1:{http}", tmp / "state")


def words(text: str) -> str:
    return " ".join(re.findall(r"[a-z]+", text.lower()))


def resampled(pcm: bytes, in_rate: int, rate: int, layout: str) -> bytes:
    """16-bit mono ``pcm`` at ``in_rate`` as 16-bit interleaved ``layout`` at ``rate``."""
    frame = av.AudioFrame.from_ndarray(numpy.frombuffer(pcm, "<i2").reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = in_rate
    resampler = av.AudioResampler(format="s16", layout=layout, rate=rate)
    frames = [*resampler.resample(frame), *resampler.resample(None)]
    return b"".join(bytes(f.planes[0])[: f.samples * 2 * len(f.layout.channels)] for f in frames)


async def command(
    port: int,
    pcm: bytes,
    *,
    rate: int = 16000,
    channels: int = 1,
    name: str | None = None,
    language: str | None = "en",
    chunk_seconds: float = 0.1,
) -> list[Event]:
    """Send one command as Home Assistant does; the events up to the transcript or an error."""
    step = int(rate * chunk_seconds) * 2 * channels
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Transcribe(name=name, language=language).event())
        await client.write_event(AudioStart(rate=rate, width=2, channels=channels).event())
        for start in range(0, len(pcm), step):
            await client.write_event(AudioChunk(rate, 2, channels, pcm[start : start + step]).event())
        await client.write_event(AudioStop().event())
        events: list[Event] = []
        while True:
            event = await asyncio.wait_for(client.read_event(), 120)
            assert event is not None, f"the connection closed after {[e.type for e in events]}"
            events.append(event)
            if Transcript.is_type(event.type) or Error.is_type(event.type):
                return events


def transcript(events: list[Event]) -> str:
    assert Transcript.is_type(events[-1].type), events[-1]
    return Transcript.from_event(events[-1]).text


async def test_describe_lists_the_bundled_whisper_first_with_its_languages(listener: Listener) -> None:
    async with AsyncTcpClient("127.0.0.1", listener.port) as client:
        await client.write_event(Describe().event())
        event = await asyncio.wait_for(client.read_event(), 30)
    assert event is not None and Info.is_type(event.type)
    [program] = Info.from_event(event).asr
    assert program.installed and program.supports_transcript_streaming
    assert [m.name for m in program.models] == ["whisper", "echo"]  # the configured ones, whisper first
    assert {"en", "de", "it"} <= set(program.models[0].languages)


async def test_a_spoken_command_in_16khz_mono_chunks_comes_back_as_text(listener: Listener) -> None:
    events = await command(listener.port, festival_pcm(KITCHEN))
    assert words(transcript(events)) == KITCHEN


async def test_44khz_stereo_chunks_are_converted(listener: Listener) -> None:
    pcm = resampled(synthesise_pcm("open the window in the bedroom"), 22050, 44100, "stereo")
    events = await command(listener.port, pcm, rate=44100, channels=2)
    assert words(transcript(events)) == "open the window in the bedroom"


async def test_streaming_sends_start_chunks_stop_then_the_transcript(listener: Listener) -> None:
    events = await command(listener.port, festival_pcm(KITCHEN))
    types = [e.type for e in events]
    assert TranscriptStart.is_type(types[0]) and TranscriptStop.is_type(types[-2]), types
    chunks = [TranscriptChunk.from_event(e).text for e in events if TranscriptChunk.is_type(e.type)]
    assert chunks and words(" ".join(chunks)) == words(transcript(events))


async def test_an_unknown_provider_is_an_error_event_that_names_what_serves(listener: Listener) -> None:
    [*_, event] = await command(listener.port, festival_pcm(KITCHEN), name="siri")
    error = Error.from_event(event)
    assert error.code == "unknown_provider" and "'siri'" in error.text and "whisper" in error.text


async def test_a_configured_cloud_provider_answers_through_its_batch_api_in_memory(listener: Listener) -> None:
    pcm = festival_pcm(KITCHEN)
    events = await command(listener.port, pcm, name="echo")
    assert transcript(events) == f"echo command.wav {len(pcm) + 44} bytes"  # the WAV it was handed
    assert not list((listener.state / "wyoming").iterdir())


async def test_an_installed_but_unconfigured_provider_says_so(listener: Listener) -> None:
    [*_, event] = await command(listener.port, festival_pcm(KITCHEN), name="sarvam")
    error = Error.from_event(event)
    assert error.code == "provider_unavailable" and "[providers.sarvam]" in error.text


async def test_an_unknown_language_is_an_error_event(listener: Listener) -> None:
    [*_, event] = await command(listener.port, festival_pcm(KITCHEN), language="tlh")
    error = Error.from_event(event)
    assert error.code == "unsupported_language" and "'tlh'" in error.text


async def test_a_command_longer_than_the_limit_is_refused_with_an_error(listener: Listener) -> None:
    [*_, event] = await command(listener.port, bytes(16000 * 2 * 11))
    assert Error.from_event(event).code == "too_long"


async def test_ten_clients_at_once_each_get_their_own_transcript(listener: Listener) -> None:
    phrases = ["turn on the kitchen light", "open the garage door", "play some music in the garden"]
    spoken = [festival_pcm(p) for p in phrases]
    results = await asyncio.gather(*(command(listener.port, spoken[i % 3]) for i in range(10)))
    assert [words(transcript(r)) for r in results] == [phrases[i % 3] for i in range(10)]


async def test_a_client_that_vanishes_mid_stream_costs_nothing(listener: Listener) -> None:
    pcm = festival_pcm(KITCHEN)
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    client = AsyncTcpClient("127.0.0.1", listener.port)
    client._reader, client._writer = reader, writer  # the package's framing on a socket we can cut
    await client.write_event(Transcribe(language="en").event())
    await client.write_event(AudioStart(rate=16000, width=2, channels=1).event())
    await client.write_event(AudioChunk(16000, 2, 1, pcm[: len(pcm) // 2]).event())
    writer.transport.abort()  # a reset, as a satellite losing power
    events = await command(listener.port, pcm)
    assert words(transcript(events)) == KITCHEN and listener.daemon.alive
    assert not listener.daemon.named("wyoming.session_failed")


async def test_an_event_announcing_a_huge_body_ends_only_its_session(listener: Listener) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.write(
        b'{"type": "audio-chunk", "data": {"rate": 16000, "width": 2, "channels": 1}, "payload_length": 10000000000}\n'
    )
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 10) == b""  # closed at once, nothing buffered
    writer.close()
    assert words(transcript(await command(listener.port, festival_pcm(KITCHEN)))) == KITCHEN


async def test_commands_are_not_journaled_by_default(listener: Listener) -> None:
    await command(listener.port, festival_pcm(KITCHEN))
    with sqlite3.connect(listener.state / "journal.db") as db:
        assert db.execute("SELECT count(*) FROM jobs").fetchone() == (0,)


async def test_healthz_and_metrics_include_the_listener(listener: Listener) -> None:
    await command(listener.port, festival_pcm(KITCHEN))
    async with httpx.AsyncClient(base_url=listener.http) as http:
        health = (await http.get("/healthz")).json()
        metrics = (await http.get("/metrics")).text
    assert health["checks"]["wyoming"]["ok"] is True
    assert 'stenod_wyoming_commands_total{outcome="ok",provider="whisper"}' in metrics
    assert "stenod_wyoming_listening 1.0" in metrics and "stenod_wyoming_clients 0.0" in metrics


async def test_the_listener_is_announced_over_zeroconf(listener: Listener) -> None:
    zeroconf = AsyncZeroconf(ip_version=IPVersion.V4Only)
    try:
        info = await zeroconf.async_get_service_info(
            "_wyoming._tcp.local.", f"{ZEROCONF_NAME}._wyoming._tcp.local.", 5000
        )
    finally:
        await zeroconf.async_close()
    assert info is not None and info.port == listener.port and info.parsed_addresses()


async def test_the_live_worker_stays_loaded_while_idle_files_unload(listener: Listener) -> None:
    [ready] = listener.daemon.named("whisper.live_worker_ready")
    [live] = ready["pids"]
    await asyncio.sleep(2.5)  # more than idle_unload_seconds
    events = await command(listener.port, festival_pcm(KITCHEN))
    assert words(transcript(events)) == KITCHEN
    assert psutil.pid_exists(live) and psutil.Process(live).nice() == 0
    assert len(listener.daemon.named("whisper.live_worker_ready")) == 1


def test_sigterm_with_clients_connected_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(
        tmp_path / "stenod.toml",
        top={"state_dir": tmp_path / "state", "log_format": "json"},
        sections={"wyoming": {"listen": f"127.0.0.1:{port}", "zeroconf": False}},
        providers={"whisper": {"workers": 1}},
    )

    async def idle_clients_then_stop(daemon: Daemon) -> int:
        clients = [AsyncTcpClient("127.0.0.1", port) for _ in range(3)]
        for client in clients:
            await client.connect()
        await clients[0].write_event(AudioStart(rate=16000, width=2, channels=1).event())
        daemon.process.terminate()
        code = await asyncio.to_thread(daemon.process.wait, 60)
        for client in clients:
            assert await asyncio.wait_for(client.read_event(), 5) is None  # closed by the server
            await client.disconnect()
        return code

    with running(config, tmp_path / "daemon.log") as daemon:
        assert asyncio.run(idle_clients_then_stop(daemon)) == 0
        assert daemon.named("wyoming.stopped")


def test_a_default_provider_that_cannot_answer_commands_stops_the_start(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "stenod.toml",
        top={"state_dir": tmp_path / "state", "log_format": "json"},
        sections={"wyoming": {"listen": f"127.0.0.1:{free_port()}", "provider": "azure"}},
    )
    run = subprocess.run([*STENOD, "run", "--config", str(config)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr[-2000:]
    assert "wyoming.provider = 'azure' cannot answer voice commands: it does not transcribe speech" in run.stderr
