"""The job journal on SQLite, the embedded default: the SQL journal's operations run on
the one writer thread (:mod:`stenod.adapters.sqlite.store`), which commits whatever is
queued together."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from stenod.adapters.sql import views
from stenod.adapters.sql.journal import SqlJournal
from stenod.adapters.sql.statements import Op, run_sync, sqlite_dialect
from stenod.adapters.sqlite.schema import migrate
from stenod.adapters.sqlite.store import WriterThread, connect
from stenod.jobs import JobView
from stenod.journal import OutboxRow

T = TypeVar("T")


class _WriterDriver:
    def __init__(self, writer: WriterThread) -> None:
        self._writer = writer

    async def run(self, make: Callable[[], Op[T]], *, write: bool) -> T:
        return await self._writer.call(lambda conn: run_sync(conn, make(), dialect=sqlite_dialect), write=write)


class SqliteJournal(SqlJournal):
    """The daemon's journal in ``path``. All calls run on the single writer thread."""

    def __init__(self, path: Path, **kwargs: Any) -> None:
        self.path = path
        self._writer = WriterThread(path, migrate)
        super().__init__(_WriterDriver(self._writer), **kwargs)

    @classmethod
    def open(cls, path: Path, **kwargs: Any) -> SqliteJournal:
        journal = cls(path, **kwargs)
        journal._writer.start()
        return journal

    async def __aenter__(self) -> SqliteJournal:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._writer.close()

    async def aclose(self) -> None:
        self.close()

    async def ping(self) -> bool:
        """The writer thread answers and can commit (``/healthz``); False while it waits for
        disk space."""
        if self._writer.waiting_for_space:
            return False
        return bool(await self._writer.call(lambda c: c.execute("SELECT 1").fetchone()[0], write=False))

    def disk_full(self) -> str | None:
        """The journal's file while its commits wait for disk space (SQLITE_FULL), else None."""
        return str(self.path) if self._writer.waiting_for_space else None

    async def alive(self) -> bool:
        """The writer thread works (the watchdog): waiting for disk space is working, and a
        restart would not make room."""
        return self._writer.waiting_for_space or await self.ping()


class SqliteOutbox:
    """The relay process's read-only view of the outbox: in WAL mode a reader never blocks
    the daemon's writer, and a read takes well under a millisecond."""

    reads_above_floor = True  # one writer: rows commit in sequence order

    def __init__(self, path: Path) -> None:
        self._conn = connect(path, readonly=True)

    async def read(self, after: int, limit: int) -> list[OutboxRow]:
        """Outbox rows with ``seq`` above ``after``, oldest first."""
        return run_sync(self._conn, views.outbox(after, limit))

    async def wake_on_commits(self, ready: asyncio.Event, stopping: asyncio.Event) -> None:
        """Nothing to do: the one daemon that writes this journal wakes its relay itself."""

    async def aclose(self) -> None:
        self._conn.close()


class JournalReader:
    """Read-only access for the CLI (``stenod jobs``, ``stenod job``), in the calling thread."""

    def __init__(self, path: Path) -> None:
        self._conn = connect(path, readonly=True)

    def job(self, job_id: str) -> JobView | None:
        return run_sync(self._conn, views.job_view(job_id))

    def jobs(self, state: str | None = None, limit: int = 50) -> list[JobView]:
        return run_sync(self._conn, views.list_jobs(state, limit))

    def leases(self, job_ids: list[str]) -> dict[str, list[tuple[str, float]]]:
        return run_sync(self._conn, views.leases(job_ids))

    def close(self) -> None:
        self._conn.close()
