"""The job journal on PostgreSQL: the SQL journal's operations on a psycopg pool, the
schema migrated at start, and the read-only access of the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import psycopg
import structlog
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from stenod.adapters.postgres.driver import CONNECTION_OPTIONS, PoolDriver, dialect, run_async
from stenod.adapters.postgres.instance_lock import InstanceLock, application_name
from stenod.adapters.postgres.schema import migrate
from stenod.adapters.sql import views
from stenod.adapters.sql.journal import SqlJournal, default_instance_id
from stenod.adapters.sql.statements import run_sync
from stenod.errors import ConfigError, JournalError
from stenod.jobs import JobView
from stenod.journal import OutboxRow

__all__ = ["PostgresJournal", "PostgresOutbox", "PostgresReader", "describe_url"]

_LOCK_CHECK_SECONDS = 5.0
_LISTEN_CHECK_SECONDS = 2.0
OUTBOX_CHANNEL = "stenod_outbox"
_RELAY_LOCK = 0x5733_0D00_0000_0003  # "stenod: the relay that publishes the outbox"
log = structlog.get_logger("stenod.amqp")


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

    shared = True

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        where: str,
        *,
        reconnect_seconds: float,
        lock: InstanceLock | None = None,
        **kwargs: Any,
    ) -> None:
        self._pg_driver = PoolDriver(pool, reconnect_seconds=reconnect_seconds)
        super().__init__(self._pg_driver, **kwargs)
        self._pool = pool
        self._lock = lock
        self.where = where

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        max_connections: int = 4,
        reconnect_seconds: float = 30.0,
        instance_id: str | None = None,
        lock_instance: bool = False,
        **kwargs: Any,
    ) -> PostgresJournal:
        """Connect (waiting up to ``reconnect_seconds`` for the database) and migrate the
        schema. ``lock_instance``: refuse to start while another daemon runs under the same
        ``instance_id`` (a daemon does; tests and tools that only read need not)."""
        where = describe_url(url)
        instance_id = instance_id or default_instance_id()
        # The schema first, on a connection of its own: its failure says why (the pool's only says "timeout").
        conn = await _connect(url, where, reconnect_seconds)
        guard = InstanceLock(url, where, instance_id) if lock_instance else None
        try:
            try:
                await migrate(conn, where)
                offset = await _clock_offset(conn)
            finally:
                await conn.close()
            if guard is not None:
                await guard.acquire(wait_seconds=20.0)  # a vanished daemon's session ends within _IDLE_SECONDS
        except psycopg.OperationalError as exc:
            # The database went away after the first connection (restarted, sessions cut):
            # as when it cannot be reached at all, exit 1 and let the restart try again.
            raise JournalError(f"journal database {where} went away while opening the journal: {exc}") from exc
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
        # Leases are measured in the database's time, so instances whose clocks differ agree on them.
        return cls(
            pool,
            where,
            reconnect_seconds=reconnect_seconds,
            lock=guard,
            instance_id=instance_id,
            clock=lambda: time.time() + offset,
            notify=f"NOTIFY {OUTBOX_CHANNEL}",  # delivered at commit: the relays read at once
            **kwargs,
        )

    async def __aenter__(self) -> PostgresJournal:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._pg_driver.aclose()  # the writes already queued, then the pool
        await self._pool.close()
        if self._lock is not None:
            await self._lock.aclose()

    async def alive(self) -> bool:
        """Nothing of ours can hang here (no thread, the pool reconnects by itself)."""
        return True

    def disk_full(self) -> str | None:
        """The database while its writes wait for disk space (SQLSTATE 53100), else None."""
        return self.where if self._pg_driver.waiting_for_space else None

    async def ping(self) -> bool:
        """The database answers within a few seconds and takes writes (``/healthz``)."""
        if self._pg_driver.waiting_for_space:
            return False
        try:
            async with asyncio.timeout(5.0):
                async with self._pool.connection(timeout=5.0) as conn:
                    await conn.execute("SELECT 1")
                return self._lock is None or self._lock.held
        except (TimeoutError, PoolTimeout, psycopg.Error):
            return False

    async def keep_instance_lock(self, stopping: asyncio.Event) -> None:
        """While running: take the lock again after losing it with its connection; stop the
        daemon (JournalError) if another one with the same instance id has taken it meanwhile."""
        while self._lock is not None and not stopping.is_set():
            await self._lock.check()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_LOCK_CHECK_SECONDS):
                    await stopping.wait()


async def _clock_offset(conn: psycopg.AsyncConnection[Any]) -> float:
    """The database's clock minus ours (seconds), measured at the middle of a round trip."""
    before = time.time()
    cur = await conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8")
    row = await cur.fetchone()
    after = time.time()
    assert row is not None
    return float(row[0]) - (before + after) / 2


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

    def leases(self, job_ids: list[str]) -> dict[str, list[tuple[str, float]]]:
        return run_sync(self._conn, views.leases(job_ids), dialect=dialect)

    def close(self) -> None:
        self._conn.close()


class PostgresOutbox:
    """The relay process's view of the outbox, on a connection of its own (reconnected
    after the database restarts).

    Of the relays of several instances on one database, one publishes: the one whose
    connection holds the relay lock (a session advisory lock, free again the moment that
    connection ends). The others read nothing and try again at each read, every few
    seconds while idle, so events keep flowing, in order, while any instance lives.

    The read always starts from the lowest row, whatever ``after`` says: sequence numbers
    are taken when a row is inserted, not when it commits, so a transaction that commits
    late can add a row below one already published; it must still be read. (Confirmed
    rows are deleted by the daemon within moments; the reader skips those not yet gone.)
    Per job the order holds: two transactions adding events of one job both update the
    job's row first, so the second waits for the first to commit.
    """

    reads_above_floor = False  # see above: every read starts from the lowest row

    def __init__(self, url: str) -> None:
        self._url = url
        self._where = describe_url(url)
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._leader = False
        self._said_standby = False

    async def read(self, after: int, limit: int) -> list[OutboxRow]:
        """The oldest outbox rows; none while another instance's relay publishes or the database is away."""
        del after  # see the class's note
        try:
            if self._conn is None or self._conn.closed:
                self._leader = False
                self._conn = await psycopg.AsyncConnection.connect(
                    self._url, **CONNECTION_OPTIONS, application_name=application_name() + " relay"
                )
            if not self._leader and not await self._lead(self._conn):
                return []
            return await run_async(self._conn, views.outbox(0, limit))
        except psycopg.OperationalError:
            if self._conn is not None:
                await self._conn.close()
            self._conn = None
            self._leader = False
            return []

    async def _lead(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (_RELAY_LOCK,))
        row = await cur.fetchone()
        self._leader = bool(row and row[0])
        if self._leader:
            log.info("amqp.relay_leading", journal=self._where)
            self._said_standby = False
        elif not self._said_standby:
            log.info("amqp.relay_standby", journal=self._where, hint="another instance's relay publishes the events")
            self._said_standby = True
        return self._leader

    async def wake_on_commits(self, ready: asyncio.Event, stopping: asyncio.Event) -> None:
        """Set ``ready`` whenever any instance commits events (LISTEN, on a connection of
        its own): a job that another daemon finished is published now, not at the next
        idle poll."""
        while not stopping.is_set():
            try:
                conn = await psycopg.AsyncConnection.connect(self._url, **CONNECTION_OPTIONS)
                async with conn:
                    await conn.execute(f"LISTEN {OUTBOX_CHANNEL}".encode())
                    ready.set()  # what was committed while nobody listened
                    while not stopping.is_set():
                        async for _ in conn.notifies(timeout=_LISTEN_CHECK_SECONDS):
                            ready.set()
            except psycopg.OperationalError:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await stopping.wait()

    async def aclose(self) -> None:
        if self._conn is not None:
            await self._conn.close()
