"""The two Wyoming servers of ``bench/bench_wyoming.py``, and one timed command.

- the Home Assistant add-on, ``wyoming-faster-whisper`` 3.8.1, installed from PyPI into a
  virtual environment of its own (created on first use, outside the repository) and
  started on the bundled model's CTranslate2 folder with ``--local-files-only``: no
  download, loopback only;
- ``stenod run`` with ``[wyoming] listen`` on loopback and a watched folder (for the long
  file of the busy phase).

Both get the same model, compute type (int8), beam size, threads and language.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import httpx
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.info import Describe

from support.harness import Daemon, write_config
from support.server import free_port

__all__ = ["ADDON_VERSION", "Addon", "Answer", "ask", "ask_pool", "ensure_addon_venv", "start_stenod", "wait_serving"]

ADDON_VERSION: Final = "3.8.1"
_CHUNK_SECONDS: Final = 0.02  # Home Assistant streams the microphone in small chunks


@dataclass(frozen=True, slots=True)
class Answer:
    seconds: float  # from audio-stop written to the transcript read
    text: str


def ensure_addon_venv(venv: Path) -> Path:
    """The add-on's Python, installing it from PyPI into ``venv`` the first time."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    probe = subprocess.run([str(python), "-m", "pip", "show", "wyoming-faster-whisper"], capture_output=True, text=True)
    if f"Version: {ADDON_VERSION}" not in probe.stdout:
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", f"wyoming-faster-whisper=={ADDON_VERSION}"], check=True
        )
    return python


class Addon:
    """``python -m wyoming_faster_whisper`` on loopback, as the add-on runs it."""

    def __init__(self, python: Path, model: Path, data: Path, *, beam_size: int, threads: int, log: Path) -> None:
        self.port = free_port()
        data.mkdir(parents=True, exist_ok=True)
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [
                str(python), "-m", "wyoming_faster_whisper",
                "--uri", f"tcp://127.0.0.1:{self.port}",
                "--model", str(model),
                "--stt-library", "faster-whisper",
                "--data-dir", str(data),
                "--local-files-only",
                "--compute-type", "int8",
                "--beam-size", str(beam_size),
                "--cpu-threads", str(threads),
                "--language", "en",
            ],
            stdout=self._log,
            stderr=self._log,
        )  # fmt: skip

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def start_stenod(
    tmp: Path, model_dir: Path, inbox: Path, *, beam_size: int, workers: int = 1, keep: bool = False
) -> tuple[Daemon, int, str]:
    """``stenod run`` with default whisper workers, a watched folder, the listener (with
    ``workers`` live workers, journaling commands with ``keep``) and the HTTP server
    (``/asr``: a command as a job through the batch workers, for comparison)."""
    port, http = free_port(), free_port()
    listener = {"listen": f"127.0.0.1:{port}", "zeroconf": False, "beam_size": beam_size, "workers": workers}
    config = write_config(
        tmp / "stenod.toml",
        top={"state_dir": tmp / "state", "log_format": "json"},
        sections={
            "wyoming": {**listener, "keep": keep},
            "http": {"listen": f"127.0.0.1:{http}"},
        },
        watch=[{"path": inbox, "settle_seconds": 0.3, "formats": ["txt"]}],
        providers={"whisper": {"model_dir": model_dir}},
    )
    daemon = Daemon(config, tmp / "daemon.log").start()
    try:
        daemon.wait_ready(timeout=300)
    except BaseException:
        daemon.kill()
        raise
    return daemon, port, f"http://127.0.0.1:{http}"


async def ask_pool(base_url: str, pcm: bytes, *, patience_seconds: float) -> Answer | None:
    """The same command through ``/asr``: a journaled job on the batch workers, which is what
    a priority lane in the batch pool would give at best. None: no answer in time."""
    started = time.perf_counter()
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=patience_seconds) as http:
            response = await http.post(
                "/asr",
                params={"encode": "false", "language": "en", "output": "txt"},
                files={"audio_file": ("command.pcm", pcm, "application/octet-stream")},
            )
            response.raise_for_status()
    except httpx.TimeoutException:
        return None
    return Answer(time.perf_counter() - started, response.text.strip())


async def wait_serving(port: int, patience_seconds: float = 300.0) -> None:
    """Until the server at ``port`` answers ``describe``."""
    deadline = time.monotonic() + patience_seconds
    while True:
        try:
            async with AsyncTcpClient("127.0.0.1", port) as client:
                await client.write_event(Describe().event())
                if await asyncio.wait_for(client.read_event(), 30) is not None:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def ask(port: int, pcm: bytes, *, language: str = "en") -> Answer:
    """One 16 kHz mono command, sent as fast as the socket takes it; timed from audio-stop."""
    step = int(16000 * _CHUNK_SECONDS) * 2
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Transcribe(language=language).event())
        await client.write_event(AudioStart(rate=16000, width=2, channels=1).event())
        for start in range(0, len(pcm), step):
            await client.write_event(AudioChunk(16000, 2, 1, pcm[start : start + step]).event())
        await client.write_event(AudioStop().event())
        stopped = time.perf_counter()
        while True:
            event = await asyncio.wait_for(client.read_event(), 120)
            if event is None:
                raise ConnectionError("the server closed the connection without a transcript")
            if Error.is_type(event.type):
                raise RuntimeError(Error.from_event(event).text)
            if Transcript.is_type(event.type):
                return Answer(time.perf_counter() - stopped, Transcript.from_event(event).text)
