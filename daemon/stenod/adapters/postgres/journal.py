"""The job journal on PostgreSQL: the SQL journal's operations on a psycopg pool, the
schema migrated at start, and the read-only access of the CLI."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from stenod.adapters.postgres.driver import CONNECTION_OPTIONS, PoolDriver, dialect, run_async
from stenod.adapters.postgres.schema import migrate
from stenod.adapters.postgres.sole_user import SoleUser, application_name
from stenod.adapters.sql import views
from stenod.adapters.sql.journal import SqlJournal
from stenod.adapters.sql.statements import run_sync
from stenod.errors import ConfigError
from stenod.jobs import JobView
from stenod.journal import JournalError, OutboxRow

__all__ = ["PostgresJournal", "PostgresOutbox", "PostgresReader", "describe_url"]

_SOLE_USER_CHECK_SECONDS = 5.0


def describe_url(url: str) -> str:
    """The database, named without its password (for messages and logs)."""
    try:
        info = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"[journal] url is not a PostgreSQL connection string: {exc}") from None
    host = info.get("host") or "localhost"
    port = info.get("port") or "5432"
    return f"postgresql://{info.get('user') or ''}@{host}:{port}/{info.get('dbname') or ''}"


class PostgresJournal(SqlJournal):
    """The journal in a PostgreSQL database, shared by every instance that names it."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        where: str,
        *,
        reconnect_seconds: float,
        sole_user: SoleUser | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(PoolDriver(pool, reconnect_seconds=reconnect_seconds), **kwargs)
        self._pool = pool
        self._sole_user = sole_user
        self.where = where

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        max_connections: int = 4,
        reconnect_seconds: float = 30.0,
        sole_user: bool = False,
        **kwargs: Any,
    ) -> PostgresJournal:
        """Connect (waiting up to ``reconnect_seconds`` for the database) and migrate the
        schema. ``sole_user``: refuse to share the database with another daemon."""
        where = describe_url(url)
        # The schema first, on a connection of its own: its failure says why (the pool's only says "timeout").
        conn = await _connect(url, where, reconnect_seconds)
        try:
            await migrate(conn, where)
        finally:
            await conn.close()
        guard = SoleUser(url, where) if sole_user else None
        if guard is not None:
            await guard.acquire(wait_seconds=20.0)  # a vanished daemon's session ends within _IDLE_SECONDS
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=max_connections,
            kwargs={**CONNECTION_OPTIONS, "application_name": application_name()},
            open=False,
            name="stenod-journal",
            reconnect_timeout=max(reconnect_seconds, 1.0),
        )
        try:
            await pool.open(wait=True, timeout=max(reconnect_seconds, 1.0))
        except PoolTimeout:
            await pool.close()
            if guard is not None:
                await guard.aclose()
            raise JournalError(f"journal database {where} cannot be reached") from None
        return cls(pool, where, reconnect_seconds=reconnect_seconds, sole_user=guard, **kwargs)

    async def __aenter__(self) -> PostgresJournal:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._pool.close()
        if self._sole_user is not None:
            await self._sole_user.aclose()

    async def alive(self) -> bool:
        """Nothing of ours can hang here (no thread, the pool reconnects by itself)."""
        return True

    async def ping(self) -> bool:
        """The database answers within a few seconds (``/healthz``, the watchdog)."""
        try:
            async with asyncio.timeout(5.0):
                async with self._pool.connection(timeout=5.0) as conn:
                    await conn.execute("SELECT 1")
                return self._sole_user is None or self._sole_user.held
        except (TimeoutError, PoolTimeout, psycopg.Error):
            return False

    async def keep_sole_user(self, stopping: asyncio.Event) -> None:
        """While running: take the lock again after losing it with its connection; stop the
        daemon (JournalError) if another one has taken it meanwhile."""
        while self._sole_user is not None and not stopping.is_set():
            await self._sole_user.check()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_SOLE_USER_CHECK_SECONDS):
                    await stopping.wait()


async def _connect(url: str, where: str, wait_seconds: float) -> psycopg.AsyncConnection[Any]:
    """One connection, waiting up to ``wait_seconds`` for a database that is starting; a
    refusal by the server itself (password, no such database) is final at once."""
    deadline = asyncio.get_running_loop().time() + wait_seconds
    while True:
        try:
            return await psycopg.AsyncConnection.connect(url, **CONNECTION_OPTIONS)
        except psycopg.OperationalError as exc:
            if _refused_by_server(exc) or asyncio.get_running_loop().time() >= deadline:
                raise JournalError(f"journal database {where} cannot be used: {_first_line(exc)}") from None
            await asyncio.sleep(1.0)


# The server's own answers that a wait can change (libpq reports them as FATAL, with no SQLSTATE).
_TRANSIENT = ("starting up", "shutting down", "in recovery", "too many", "connection slots")


def _refused_by_server(exc: psycopg.OperationalError) -> bool:
    """The server answered and said no (no such database or role, wrong password, pg_hba)."""
    text = str(exc)
    return "FATAL:" in text and not any(phrase in text for phrase in _TRANSIENT)


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


class PostgresReader:
    """Read-only access for the CLI (``stenod jobs``, ``stenod job``) on one connection."""

    def __init__(self, url: str) -> None:
        where = describe_url(url)
        try:
            self._conn = psycopg.connect(url, row_factory=dict_row, **CONNECTION_OPTIONS)
        except psycopg.OperationalError as exc:
            raise JournalError(f"journal database {where} cannot be reached: {_first_line(exc)}") from None

    def job(self, job_id: str) -> JobView | None:
        return run_sync(self._conn, views.job_view(job_id), dialect=dialect)

    def jobs(self, state: str | None = None, limit: int = 50) -> list[JobView]:
        return run_sync(self._conn, views.list_jobs(state, limit), dialect=dialect)

    def close(self) -> None:
        self._conn.close()


class PostgresOutbox:
    """The relay process's view of the outbox, on a connection of its own (reconnected
    after the database restarts)."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._where = describe_url(url)
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def read(self, after: int, limit: int) -> list[OutboxRow]:
        """Outbox rows with ``seq`` above ``after``, oldest first; none while the database is away."""
        try:
            if self._conn is None or self._conn.closed:
                self._conn = await psycopg.AsyncConnection.connect(self._url, **CONNECTION_OPTIONS)
            return await run_async(self._conn, views.outbox(after, limit))
        except psycopg.OperationalError:
            if self._conn is not None:
                await self._conn.close()
            self._conn = None
            return []

    async def aclose(self) -> None:
        if self._conn is not None:
            await self._conn.close()
