"""Group commit for the PostgreSQL journal: writes that queue up while one transaction is
under way are committed together in the next one.

A transaction costs a BEGIN, a COMMIT (a WAL flush on the server) and a connection from
the pool; a write that intake makes per request is cheaper by far than that. Under load
the SQLite writer already commits what queued in one transaction; this does the same on
PostgreSQL, with the writes of a group run one after another (never interleaved: each one
reads what the ones before it wrote, as if it ran alone, which is what the operations'
read-modify-write logic assumes).

One group is under way at a time, run by a task this object owns (so that a caller that
is cancelled while its write is in a group leaves the others' writes whole; the task is
awaited on close). If anything in a group fails (a statement, an operation such as a
fence that finds its lease gone, a connection lost before the COMMIT), the group is
rolled back and each write runs again alone, with the driver's retries: each caller gets
its own answer, and nothing of the group was written. A COMMIT whose answer was lost is
in doubt for every write in it: all of them get the driver's JournalError.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from stenod.adapters.sql.statements import Op
from stenod.errors import JournalError

T = TypeVar("T")

Make = Callable[[], Op[Any]]


@dataclass(eq=False, slots=True)
class _Write(Generic[T]):
    make: Callable[[], Op[T]]
    done: asyncio.Future[T]


class WriteGroups:
    """Queues writes and commits each group of queued ones in one transaction.

    ``together`` runs operations in one transaction and returns their results (raising if
    any of them fails, with nothing written); ``alone`` runs one with every retry the
    driver makes. ``limit``: the most writes in one transaction (bounds how long its row
    locks are held, which other instances may be waiting on)."""

    def __init__(
        self,
        together: Callable[[Sequence[Make]], Awaitable[list[Any]]],
        alone: Callable[[Make], Awaitable[Any]],
        *,
        limit: int = 100,
    ) -> None:
        self._together = together
        self._alone = alone
        self._limit = limit
        self._queued: deque[_Write[Any]] = deque()
        self._writer: asyncio.Task[None] | None = None

    async def run(self, make: Callable[[], Op[T]]) -> T:
        write: _Write[T] = _Write(make, asyncio.get_running_loop().create_future())
        self._queued.append(write)
        if self._writer is None or self._writer.done():
            # A context of its own: the writer's log lines must not carry the bound
            # context (a job id) of whichever caller happened to start it.
            self._writer = asyncio.create_task(self._write(), name="journal-writes", context=contextvars.Context())
        # A caller cancelled here cancels its future: a write not yet begun is then
        # skipped; one already in a transaction is committed with the others.
        return await write.done

    async def aclose(self) -> None:
        """Wait for the writes already queued (before the pool closes)."""
        if self._writer is not None:
            await asyncio.shield(self._writer)

    async def _write(self) -> None:
        while self._queued:
            group: list[_Write[Any]] = []
            while self._queued and len(group) < self._limit:
                write = self._queued.popleft()
                if not write.done.done():
                    group.append(write)
            if len(group) > 1 and await self._commit_together(group):
                continue
            for write in group:
                await self._commit_alone(write)

    async def _commit_together(self, group: list[_Write[Any]]) -> bool:
        """The group in one transaction; False when it must be run again one by one."""
        try:
            results = await self._together([write.make for write in group])
        except JournalError as exc:  # a COMMIT in doubt: for all of them alike
            for write in group:
                _settle(write, exc=exc)
            return True
        except Exception:
            return False  # nothing was written: each write again, alone, gets its own answer
        for write, result in zip(group, results, strict=True):
            _settle(write, result=result)
        return True

    async def _commit_alone(self, write: _Write[Any]) -> None:
        try:
            result = await self._alone(write.make)
        except Exception as exc:
            _settle(write, exc=exc)
        else:
            _settle(write, result=result)


def _settle(write: _Write[Any], *, result: Any = None, exc: BaseException | None = None) -> None:
    if write.done.done():  # its caller was cancelled and no longer waits
        return
    if exc is not None:
        write.done.set_exception(exc)
    else:
        write.done.set_result(result)
