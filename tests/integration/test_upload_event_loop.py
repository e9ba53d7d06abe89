"""A large upload leaves the event loop free: the nanogpt plugin's API client sends a
256 MiB recording to a deliberately slow server (real sockets) while a ticker measures
how late the loop wakes it. Printed figure: the worst lateness (run with ``-s``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx
import pytest

from stenod.provider import FileUpload
from stenod_nanogpt.api import NanoGptApi, TranscribeRequest
from support.server import ThreadedServer, serve
from tests.fakes.slow_upload import SlowUploadState, create_app

SIZE = 256 << 20
TICK_SECONDS = 0.01
MAX_LAG_SECONDS = 0.5  # generous: a loop that reads the file itself stalls for whole reads


class StallingFile:
    """A file on a network mount that hangs now and then: the read that crosses each
    ``every`` bytes blocks for ``stall_seconds`` (an NFS server that went away briefly)."""

    def __init__(self, path: Path, every: int, stall_seconds: float) -> None:
        self._file = path.open("rb")
        self._position = 0
        self._every = every
        self._stall = stall_seconds

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        if self._position // self._every < (self._position + len(data)) // self._every:
            time.sleep(self._stall)
        self._position += len(data)
        return data

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> StallingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def slow_server() -> Iterator[tuple[SlowUploadState, ThreadedServer]]:
    state = SlowUploadState(
        bytes_per_second=128 << 20,
        answer={"transcription": "a long recording", "metadata": {"fileName": "big.mp3"}},
    )
    with serve(create_app(state)) as server:
        yield state, server


@pytest.fixture
def big_file(tmp_path: Path) -> Path:
    path = tmp_path / "big.mp3"
    with path.open("wb") as fh:
        fh.truncate(SIZE)  # sparse: no disk space, the same reads
    return path


async def worst_lag(stopping: asyncio.Event) -> float:
    """The most a ``TICK_SECONDS`` sleep overshot until ``stopping`` is set."""
    loop = asyncio.get_running_loop()
    worst = 0.0
    while not stopping.is_set():
        start = loop.time()
        await asyncio.sleep(TICK_SECONDS)
        worst = max(worst, loop.time() - start - TICK_SECONDS)
    return worst


@pytest.mark.parametrize("disk", ["local disk", "stalling mount"])
async def test_a_large_upload_to_a_slow_server_leaves_the_event_loop_responsive(
    slow_server: tuple[SlowUploadState, ThreadedServer], big_file: Path, disk: str
) -> None:
    state, server = slow_server

    def open_file() -> IO[bytes]:
        if disk == "stalling mount":
            return StallingFile(big_file, every=128 << 20, stall_seconds=1.0)  # type: ignore[return-value]
        return big_file.open("rb")

    request = TranscribeRequest(FileUpload("big.mp3", SIZE, open_file), "Whisper-Large-V3", "hi", None, False, False)
    stopping = asyncio.Event()
    async with httpx.AsyncClient() as http, asyncio.TaskGroup() as tg:
        ticker = tg.create_task(worst_lag(stopping), name="ticker")
        started = time.monotonic()
        try:
            answer = await NanoGptApi(http, server.url, "key", timeout=120).transcribe(request)
        finally:
            stopping.set()
        seconds = time.monotonic() - started
    lag = ticker.result()
    print(f"\nUPLOAD {SIZE >> 20} MiB from a {disk} in {seconds:.1f} s; worst event-loop lag {lag * 1000:.0f} ms")
    assert answer.result is not None and answer.result["transcription"] == "a long recording"
    assert state.sizes[0] > SIZE and b'name="audio"; filename="big.mp3"\r\nContent-Type: audio/mpeg' in state.heads[0]
    assert lag < MAX_LAG_SECONDS
