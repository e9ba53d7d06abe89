"""The daemon's side of the transcription workers: a pebble process pool, the socket the
workers report on, a watchdog per file, and unloading the model when idle.

Why these choices:

- ``pebble.ProcessPool``: a worker that dies (crash, out of memory, killed) fails only the
  file it held (``ProcessExpired``) and is replaced; the files on other workers go on.
  ``concurrent.futures.ProcessPoolExecutor`` breaks as a whole instead.
- ``spawn``, never ``fork``: the daemon holds a SQLite connection and threads; a spawned
  child starts clean and inherits only what it is handed.
- One Unix-socket connection per worker, for its messages and as its lifeline: the
  daemon never writes to it, so when the daemon dies (even by SIGKILL) the worker reads
  end-of-file and exits. Per-worker streams keep a long message (a segment with its
  words) from interleaving with another worker's.
- The watchdog is a loop timer re-armed by every message about a file; a file whose worker
  says nothing for ``stall_seconds`` has its worker killed. Waiting for a free worker
  does not count.
- Idle unload: when no file has run for ``idle_unload_seconds`` the pool is stopped, so
  the model's memory goes back to the system; the next file starts it again (about a
  second for the base model).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import multiprocessing
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pebble
import structlog

from stenod.provider import BatchItem, RetryableError
from stenod_whisper import worker

__all__ = ["EnginePool"]

log = structlog.get_logger("stenod_whisper")

OnMessage = Callable[[dict[str, Any]], None]
_DRAIN_SECONDS = 2.0


@dataclass(slots=True)
class _Job:
    token: int
    item_id: str
    on_message: OnMessage
    pid: int | None = None
    timer: asyncio.TimerHandle | None = None
    timed_out: bool = False
    drained: asyncio.Event = field(default_factory=asyncio.Event)  # the worker's "done" arrived


class EnginePool:
    """Worker processes holding the model, shared by every whisper job of one provider.

    Call :meth:`transcribe` from the event loop; the pool starts on first use, restarts
    after a failure and stops when idle. :meth:`aclose` stops everything; idempotent.
    """

    def __init__(self, *, engine: dict[str, Any], workers: int, idle_unload_seconds: float, stall_seconds: float):
        self._engine = engine
        self._workers = workers
        self._idle_seconds = idle_unload_seconds
        self._stall_seconds = stall_seconds
        self._tokens = itertools.count(1)
        self._jobs: dict[int, _Job] = {}
        self._pool: pebble.ProcessPool | None = None
        self._retired: list[threading.Thread] = []
        self._server: asyncio.AbstractServer | None = None
        self._folder: Path | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._ready_pids: set[int] = set()
        self._load_error: str | None = None
        self._closed = False

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers that have loaded the model."""
        return sorted(pid for pid in self._ready_pids if _alive(pid))

    def worker_of(self, item_id: str) -> int | None:
        """The process id of the worker transcribing ``item_id`` now, if one is."""
        return next((job.pid for job in self._jobs.values() if job.item_id == item_id), None)

    @property
    def loaded(self) -> bool:
        """Whether worker processes (and so the model) are in memory now."""
        return self._pool is not None

    async def transcribe(self, item: BatchItem, request: dict[str, Any], on_message: OnMessage) -> dict[str, Any]:
        """Run :func:`stenod_whisper.worker.transcribe` in a worker.

        Raises RetryableError when the worker died or hung, or the pool is closing.
        """
        return await self.run(worker.transcribe, (item, request), item.item_id, str(item.path), on_message)

    async def run(
        self, function: Callable[..., Any], args: tuple[Any, ...], item_id: str, label: str, on_message: OnMessage
    ) -> dict[str, Any]:
        """Run ``function(token, *args)`` (a module-level function of :mod:`worker`) in a
        worker; ``label`` names the audio in errors. Raises RetryableError as ``transcribe``."""
        if self._closed:
            raise RetryableError("the whisper engine is shutting down", code="shutdown")
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        job = _Job(next(self._tokens), item_id, on_message)
        self._jobs[job.token] = job
        try:
            for attempt in range(2):
                pool = await self._current()
                try:
                    future = pool.schedule(function, args=(job.token, *args))
                except RuntimeError as exc:  # the pool broke between two files: nothing of this one ran
                    self._discard(pool)
                    if attempt:
                        raise self._failure(label, job) from exc
                    continue
                try:
                    result: dict[str, Any] = await asyncio.wrap_future(future)
                except (pebble.ProcessExpired, BrokenProcessPool) as exc:
                    if isinstance(exc, BrokenProcessPool):
                        self._discard(pool)
                    raise self._failure(label, job, exc) from exc
                # Segments sent just before the result may still be on their way on our socket.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_DRAIN_SECONDS):
                        await job.drained.wait()
                return result
            raise AssertionError("unreachable")
        finally:
            if job.timer is not None:
                job.timer.cancel()
            del self._jobs[job.token]
            if not self._jobs and self._idle_seconds > 0 and not self._closed:
                loop = asyncio.get_running_loop()
                self._idle_timer = loop.call_later(self._idle_seconds, self._unload)

    def lower_priority(self, niceness: int) -> None:
        """Run the workers at this ``nice`` increment from now on (the running ones too), so
        that processes at normal priority (the live worker of voice commands) get the CPU first."""
        self._engine["nice"] = niceness
        for pid in self.worker_pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.setpriority(os.PRIO_PROCESS, pid, max(os.getpriority(os.PRIO_PROCESS, pid), niceness))

    def _failure(self, label: str, job: _Job, exc: BaseException | None = None) -> RetryableError:
        if self._closed:
            return RetryableError(f"transcription of {label} stopped: stenod is shutting down", code="shutdown")
        if job.timed_out:
            return RetryableError(
                f"transcription of {label} made no progress for {self._stall_seconds:.0f} s; its worker was "
                "stopped (raise [providers.whisper] stall_timeout_seconds for a slow model or machine)",
                code="worker_timeout",
            )
        if job.pid is None and self._load_error is not None:
            return RetryableError(f"the Whisper model could not be loaded: {self._load_error}", code="engine_failed")
        code = getattr(exc, "exitcode", None)  # known for ProcessExpired, not when the pool broke as a whole
        if isinstance(code, int) and code < 0:
            how = f"signal {-code}" + (": killed, perhaps out of memory" if code == -signal.SIGKILL else "")
        elif isinstance(code, int):
            how = f"exit status {code}"
        else:
            how = "killed or crashed; if it keeps happening, the machine may be short of memory"
        return RetryableError(
            f"the transcription worker died ({how}) while transcribing {label}", code="worker_crashed"
        )

    async def _current(self) -> pebble.ProcessPool:
        await self._join_retired()
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="stenod-whisper-"))  # 0700: only we connect
        address = str(self._folder / "workers.sock")
        if self._server is None:
            self._server = await asyncio.start_unix_server(self._serve, path=address)
        if self._pool is None:
            self._pool = pebble.ProcessPool(
                max_workers=self._workers,
                initializer=worker.initialize,
                initargs=(address, self._engine),
                context=multiprocessing.get_context("spawn"),
            )
            log.info("whisper.workers_started", workers=self._workers)
        return self._pool

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pid = 0
        try:
            while line := await reader.readline():
                message = json.loads(line)
                if "ready" in message:
                    pid = message["ready"]
                    self._ready_pids.add(message["ready"])
                    self._load_error = None
                elif "init_failed" in message:
                    self._load_error = message["error"]
                    log.error("whisper.model_load_failed", error=message["error"])
                else:
                    self._dispatch(message)
        except (ConnectionError, ValueError) as exc:
            log.warning("whisper.worker_channel_broken", error=str(exc))
        finally:
            self._ready_pids.discard(pid)
            writer.close()

    def _dispatch(self, message: dict[str, Any]) -> None:
        job = self._jobs.get(message["token"])
        if job is None:
            return  # a late message about a file that already finished
        if message["kind"] == "started":
            job.pid = message["pid"]
        elif message["kind"] == "done":
            job.drained.set()
            return
        self._arm(job)
        job.on_message(message)

    def _arm(self, job: _Job) -> None:
        if job.timer is not None:
            job.timer.cancel()
        job.timer = asyncio.get_running_loop().call_later(self._stall_seconds, self._on_stall, job)

    def _on_stall(self, job: _Job) -> None:
        job.timed_out = True
        if job.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(job.pid, signal.SIGKILL)

    def _unload(self) -> None:
        self._idle_timer = None
        if self._pool is not None and not self._jobs:
            log.info("whisper.workers_unloaded", idle_seconds=self._idle_seconds)
            self._discard(self._pool)

    def _discard(self, pool: pebble.ProcessPool) -> None:
        """Stop ``pool`` and its workers now, off the loop: pebble stops and reaps workers in
        ``join``, which waits for each one. The thread is joined before the next pool starts."""
        if self._pool is pool:
            self._pool = None
        pool.stop()  # type: ignore[no-untyped-call]
        stopper = threading.Thread(target=pool.join, name="whisper-pool-stop", daemon=True)
        stopper.start()
        self._retired.append(stopper)

    async def _join_retired(self) -> None:
        while self._retired:
            await asyncio.to_thread(self._retired.pop().join)

    async def aclose(self) -> None:
        """Stop every worker (files in flight fail with RetryableError). Idempotent."""
        self._closed = True
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        if self._pool is not None:
            self._discard(self._pool)
        await self._join_retired()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
