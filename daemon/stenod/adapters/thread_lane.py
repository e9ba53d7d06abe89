"""A long-lived worker thread that runs blocking calls in order, in groups.

Whatever was queued while the thread was busy runs as one group, and the group's results
reach each event loop in one wake-up. ``asyncio.to_thread`` costs a pool hand-off, a
context copy and a loop wake-up per call; under load that hand-off cost more CPU than
the file checks it carried. The journal's writer is a lane whose groups are transactions.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")
C = TypeVar("C")
Call = tuple[Callable[[Any], Any], asyncio.Future[Any], bool]
Outcome = tuple[asyncio.Future[Any], Any, BaseException | None]

_MAX_GROUP = 512


class LaneClosed(RuntimeError):
    """The lane was closed: no more calls are taken."""


class ThreadLane(Generic[C]):
    """Runs ``fn(resource)`` calls on one thread. ``resource`` is what ``_open`` returns
    (nothing for a plain lane; the database connection for the journal's writer)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._queue: queue.SimpleQueue[Call | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = threading.Event()
        self._startup_error: BaseException | None = None
        self._closed = False

    def start(self) -> None:
        """Start the thread; re-raises what ``_open`` raised. ``call`` starts it when needed."""
        if self._thread.is_alive() or self._started.is_set():
            return
        self._thread.start()
        self._started.wait()
        if self._startup_error is not None:
            raise self._startup_error

    async def call(self, fn: Callable[[C], T], *, write: bool = True) -> T:
        if self._closed:
            raise self._closed_error()
        if not self._started.is_set():
            self.start()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put((fn, future, write))
        return await future

    def close(self) -> None:
        """Finish the queued calls, then stop the thread (waits up to 30 s)."""
        if self._closed:
            return
        self._closed = True
        if self._started.is_set():
            self._queue.put(None)
            self._thread.join(timeout=30)

    # -- overridden by lanes that hold a resource ------------------------------

    def _open(self) -> C:
        return None  # type: ignore[return-value]

    def _close_resource(self, resource: C) -> None:
        pass

    def _closed_error(self) -> Exception:
        return LaneClosed(f"{self.name} is closed")

    def _execute(self, resource: C, group: list[Call]) -> list[Outcome]:
        """Run one group; each call's exception is its own."""
        outcomes: list[Outcome] = []
        for fn, future, _ in group:
            try:
                outcomes.append((future, fn(resource), None))
            except BaseException as exc:
                outcomes.append((future, None, exc))
        return outcomes

    # -- thread side ---------------------------------------------------------

    def _run(self) -> None:
        try:
            resource = self._open()
        except BaseException as exc:  # reported to start() and re-raised there
            self._startup_error = exc
            self._started.set()
            return
        self._started.set()
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                group = [first]
                stop = False
                while len(group) < _MAX_GROUP:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stop = True
                        break
                    group.append(nxt)
                _deliver(self._execute(resource, group))
                if stop:
                    return
        finally:
            self._close_resource(resource)


def _deliver(outcomes: list[Outcome]) -> None:
    # One wake-up of each loop per group, not one per call.
    by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].get_loop(), []).append(outcome)
    for loop, batch in by_loop.items():
        if not loop.is_closed():
            loop.call_soon_threadsafe(_settle_all, batch)


def _settle_all(outcomes: list[Outcome]) -> None:
    for future, result, exc in outcomes:
        if future.done():
            continue
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)
