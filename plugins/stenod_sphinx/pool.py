"""The parent side of the recognition workers: a spawn-context process pool, the
progress pipe, a watchdog per file, and recovery from crashed or stuck workers.

Why these choices:

- ``spawn``, never ``fork``: the daemon holds a SQLite connection (and threads); a
  forked child would inherit both. A spawned child starts clean and inherits only the
  pipe ends and the cancel slots handed to it.
- A "lifeline" pipe whose write end only this process holds: when the daemon dies,
  even by SIGKILL, the workers read end-of-file and exit instead of waiting forever for
  work from a parent that is gone.
- One shared pipe for progress: workers write tiny messages, each one atomic write
  (below PIPE_BUF), so no lock is shared with processes that may be killed; the event
  loop reads it with ``add_reader`` (no thread, no polling).
- The watchdog is a loop timer re-armed by every message from the worker. A file whose
  worker says nothing for ``timeout_factor × (report_seconds + max_piece_seconds) +
  grace_seconds`` (the most audio it handles between two messages, 460 s by default)
  has its worker killed; time spent queued for a free worker does not count.
  ``ProcessPoolExecutor`` cannot lose one worker without breaking the whole pool, so
  other files in flight fail with a RetryableError too and the pool is rebuilt on the
  next call; the dispatcher's retry limit stops a file that always hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing
import os
import signal
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from stenod.provider import BatchItem, RetryableError
from stenod_sphinx import worker

__all__ = ["WorkerPool"]

_CANCEL_SLOTS = 256


@dataclass(slots=True)
class _Job:
    token: int
    progress: Callable[[float], None]
    pid: int | None = None
    timer: asyncio.TimerHandle | None = None
    timed_out: bool = False


@dataclass(slots=True)
class _Generation:
    """One process pool and the channels its workers were started with."""

    executor: ProcessPoolExecutor
    reader: Connection
    writer: Connection
    lifeline: tuple[Connection, Connection]
    cancelled: Any
    loop: asyncio.AbstractEventLoop | None = None
    jobs: dict[int, _Job] = field(default_factory=dict)

    def pids(self) -> list[int]:
        # ProcessPoolExecutor has no public way to reach its workers before 3.14
        # (terminate_workers); _processes has been stable since 3.2.
        processes = getattr(self.executor, "_processes", None) or {}
        return [p.pid for p in list(processes.values()) if p.pid is not None]


class WorkerPool:
    """Recognition worker processes shared by every sphinx job of one provider.

    Call :meth:`transcribe` from the event loop; the pool starts lazily and restarts
    itself after a crash. :meth:`aclose` stops every worker; it is idempotent.
    """

    def __init__(
        self,
        *,
        workers: int,
        max_piece_seconds: float,
        timeout_factor: float,
        grace_seconds: float,
        report_seconds: float = 10.0,
    ) -> None:
        self._workers = workers
        self._max_piece_seconds = max_piece_seconds
        # Between two messages a worker handles at most report_seconds of new audio plus
        # one buffered piece of max_piece_seconds.
        self._budget_seconds = timeout_factor * (report_seconds + max_piece_seconds) + grace_seconds
        self._report_seconds = report_seconds
        self._tokens = itertools.count(1)
        self._generation: _Generation | None = None
        self._closed = False

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (for diagnostics and tests)."""
        return self._generation.pids() if self._generation else []

    async def transcribe(self, item: BatchItem, progress: Callable[[float], None]) -> dict[str, Any]:
        """Recognise one file in a worker; see :func:`stenod_sphinx.worker.transcribe`
        for the result. Raises RetryableError if the worker crashed, hung or the pool
        is shutting down."""
        loop = asyncio.get_running_loop()
        for attempt in range(2):
            generation = self._current(loop)
            job = _Job(next(self._tokens), progress)
            try:
                future = generation.executor.submit(worker.transcribe, job.token, item, self._report_seconds)
            except BrokenProcessPool as exc:
                # Broke between two files (a crash noticed late): nothing of this file
                # ran yet, so starting afresh once is safe.
                await self._discard(generation)
                if attempt:
                    raise self._failure(item, job) from exc
                continue
            generation.jobs[job.token] = job
            try:
                return await asyncio.wrap_future(future)
            except BrokenProcessPool as exc:
                await self._discard(generation)
                raise self._failure(item, job) from exc
            except asyncio.CancelledError:
                future.cancel()
                slots = generation.cancelled
                slots[job.token % len(slots)] = job.token
                raise
            finally:
                if job.timer is not None:
                    job.timer.cancel()
                generation.jobs.pop(job.token, None)
        raise AssertionError("unreachable")

    def _failure(self, item: BatchItem, job: _Job) -> RetryableError:
        if self._closed:
            return RetryableError(f"recognition of {item.path} stopped: stenod is shutting down", code="shutdown")
        if job.timed_out:
            return RetryableError(
                f"recognition of {item.path} made no progress for {self._budget_seconds:.0f} s; its worker was stopped",
                code="worker_timeout",
            )
        if job.pid is None:
            return RetryableError(
                f"no recognition worker could start for {item.path}; the daemon's log has the worker's error",
                code="worker_crashed",
            )
        return RetryableError(
            f"the recognition worker died while transcribing {item.path} (killed or crashed)",
            code="worker_crashed",
        )

    def _current(self, loop: asyncio.AbstractEventLoop) -> _Generation:
        if self._closed:
            raise RetryableError("the sphinx provider is closed", code="shutdown")
        generation = self._generation
        if generation is None:
            generation = self._generation = self._start()
        if generation.loop is not loop:
            if generation.loop is not None and not generation.loop.is_closed():
                generation.loop.remove_reader(generation.reader.fileno())
            loop.add_reader(generation.reader.fileno(), self._on_message, generation)
            generation.loop = loop
        return generation

    def _start(self) -> _Generation:
        context = multiprocessing.get_context("spawn")
        reader, writer = context.Pipe(duplex=False)
        life_reader, life_writer = context.Pipe(duplex=False)
        cancelled = context.RawArray("q", _CANCEL_SLOTS)
        executor = ProcessPoolExecutor(
            max_workers=self._workers,
            mp_context=context,
            initializer=worker.initialize,
            initargs=(writer, life_reader, cancelled, self._max_piece_seconds),
        )
        return _Generation(executor, reader, writer, (life_reader, life_writer), cancelled)

    def _on_message(self, generation: _Generation) -> None:
        try:
            while generation.reader.poll():
                message = generation.reader.recv()
                self._dispatch(generation, message)
        except (EOFError, OSError):
            if generation.loop is not None:
                generation.loop.remove_reader(generation.reader.fileno())

    def _dispatch(self, generation: _Generation, message: tuple[Any, ...]) -> None:
        kind, token, *rest = message
        job = generation.jobs.get(token)
        if job is None:
            return  # a late message from a file that is already finished
        if kind == "started":
            job.pid = rest[0]
        self._arm(generation, job)
        if kind == "audio":
            job.progress(float(rest[1]))

    def _arm(self, generation: _Generation, job: _Job) -> None:
        if job.timer is not None:
            job.timer.cancel()
        loop = generation.loop
        if loop is not None:
            job.timer = loop.call_later(self._budget_seconds, self._on_timeout, generation, job)

    def _on_timeout(self, generation: _Generation, job: _Job) -> None:
        job.timed_out = True
        if job.pid is not None and job.pid in generation.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(job.pid, signal.SIGKILL)

    async def _discard(self, generation: _Generation) -> None:
        if self._generation is generation:
            self._generation = None
        await self._stop(generation)

    async def _stop(self, generation: _Generation) -> None:
        if generation.loop is not None and not generation.loop.is_closed():
            generation.loop.remove_reader(generation.reader.fileno())
            generation.loop = None
        for pid in generation.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        # Joins the pool's manager thread, which reaps every worker: no zombies.
        await asyncio.to_thread(generation.executor.shutdown, wait=True, cancel_futures=True)
        for connection in (generation.reader, generation.writer, *generation.lifeline):
            connection.close()

    async def aclose(self) -> None:
        """Stop every worker (files in flight fail with RetryableError). Idempotent."""
        self._closed = True
        generation, self._generation = self._generation, None
        if generation is not None:
            await self._stop(generation)
