"""In-process notice of job changes, for whoever waits on a job in this daemon: a
synchronous HTTP call waiting for its result, an event stream, the page's live list.

The journal reports the jobs whose events a commit added (:meth:`JobWatch.changed`); a
waiter takes a :meth:`ticket` *before* it reads the journal, so a change that lands between
its read and its wait still wakes it. Live segments (text decoded so far) of running jobs
are kept here too: they matter only while someone watches, so they are never journaled.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["JobWatch"]

_MAX_SEGMENTS = 20_000  # per job: hours of speech; a stream that far behind reads the journal instead
_KEEP_SECONDS = 60.0  # live segments outlive their step this long, for a stream still catching up


class JobWatch:
    def __init__(self) -> None:
        self._tickets: dict[str, asyncio.Event] = {}
        self._any = asyncio.Event()
        self._segments: dict[str, list[Mapping[str, Any]]] = {}
        self._ended: dict[str, float] = {}

    def ticket(self, job_id: str | None = None) -> asyncio.Event:
        """An event set at the next change of ``job_id`` (of any job, when None)."""
        if job_id is None:
            return self._any
        event = self._tickets.get(job_id)
        if event is None:
            event = self._tickets[job_id] = asyncio.Event()
        return event

    def changed(self, job_ids: Iterable[str]) -> None:
        """Called after a commit that added events for ``job_ids``."""
        for job_id in job_ids:
            event = self._tickets.pop(job_id, None)
            if event is not None:
                event.set()
        self._any.set()
        self._any = asyncio.Event()

    async def wait(self, ticket: asyncio.Event, seconds: float | None) -> bool:
        """Wait for ``ticket`` at most ``seconds``; False when they ran out."""
        try:
            async with asyncio.timeout(seconds):
                await ticket.wait()
        except TimeoutError:
            return False
        return True

    def segment(self, job_id: str, segment: Mapping[str, Any]) -> None:
        """A piece of a running job's transcript, as soon as the provider decoded it."""
        pieces = self._segments.setdefault(job_id, [])
        if len(pieces) < _MAX_SEGMENTS:
            pieces.append(segment)
        event = self._tickets.pop(job_id, None)
        if event is not None:
            event.set()

    def segments(self, job_id: str, start: int = 0) -> list[Mapping[str, Any]]:
        """The live segments of ``job_id`` from index ``start``."""
        return self._segments.get(job_id, [])[start:]

    def finished(self, job_ids: Iterable[str]) -> None:
        """A provider step of these jobs ended (their results, or errors, are in the journal):
        their live segments go a minute later, when any stream has caught up."""
        now = time.monotonic()
        for job_id in job_ids:
            if job_id in self._segments:
                self._ended[job_id] = now
        for job_id, ended in list(self._ended.items()):
            if now - ended > _KEEP_SECONDS:
                del self._ended[job_id]
                self._segments.pop(job_id, None)
