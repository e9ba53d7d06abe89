"""Running the journal's operations on PostgreSQL: a pool of async connections, one
transaction per operation.

An operation that loses a race with another instance (two intakes of one ``request_id``,
a serialization failure, a deadlock) is simply run again: it reads what the winner
committed. One that fails because the database went away is run again, on a new
connection, while the failure came before the commit (nothing was written), for up to
``reconnect_seconds``. A commit whose answer was lost is in doubt: that one stops the
daemon (JournalError), whose restart reads the journal as it really is, rather than
guessing, which could create a job twice.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
import structlog
from psycopg import AsyncConnection, AsyncPipeline, errors
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from stenod.adapters.sql.statements import All, Count, Many, One, Op
from stenod.journal import JournalError

T = TypeVar("T")
log = structlog.get_logger("stenod.journal")

_RACES = (errors.UniqueViolation, errors.SerializationFailure, errors.DeadlockDetected)
# Every connection's options: autocommit (transactions are explicit), and a peer that
# vanished (power off, a network that drops packets) noticed within about 30 s instead of
# TCP's hours, so a query waiting for an answer that will never come fails and is retried.
CONNECTION_OPTIONS: dict[str, Any] = {
    "autocommit": True,
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}
_RACE_ATTEMPTS = 5
_WAIT_REPORT_SECONDS = 5.0


@functools.lru_cache(maxsize=512)
def dialect(sql: str) -> bytes:
    """A shared statement in psycopg's placeholder style (``?`` → ``%s``, a literal ``%`` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s").encode()


async def run_async(conn: AsyncConnection[Any], op: Op[T], pipeline: AsyncPipeline | None = None) -> T:
    """Run an operation on an async connection (the caller owns the transaction). In a
    pipeline, statements whose result the operation does not read are sent without
    waiting: a write of five statements is one round trip, not five."""
    try:
        statement = next(op)
        async with conn.cursor(row_factory=dict_row) as cur:
            while True:
                result: Any = None
                if isinstance(statement, Many):
                    if statement.rows:
                        await cur.executemany(dialect(statement.sql), [tuple(r) for r in statement.rows])
                else:
                    await cur.execute(dialect(statement.sql), tuple(statement.args))
                    if isinstance(statement, All):
                        result = await cur.fetchall()
                    elif isinstance(statement, One):
                        result = await cur.fetchone()
                    elif isinstance(statement, Count):
                        if pipeline is not None:
                            await pipeline.sync()
                        result = cur.rowcount
                statement = op.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


class _Uncommitted(Exception):
    """The connection failed before COMMIT was sent: nothing was written, try again."""


class PoolDriver:
    """The journal's driver on a psycopg pool."""

    def __init__(self, pool: AsyncConnectionPool[Any], *, reconnect_seconds: float) -> None:
        self._pool = pool
        self._reconnect_seconds = reconnect_seconds

    async def run(self, make: Callable[[], Op[T]], *, write: bool) -> T:
        deadline = time.monotonic() + self._reconnect_seconds
        races = 0
        while True:
            try:
                # A few seconds at a time, so that waiting for a database that went away is
                # reported while it lasts, not only when reconnect_seconds are over.
                wait = min(max(deadline - time.monotonic(), 0.5), _WAIT_REPORT_SECONDS)
                return await self._attempt(make, wait, write=write)
            except _RACES as exc:
                races += 1
                if races >= _RACE_ATTEMPTS:
                    raise JournalError(f"journal write kept conflicting with other instances: {exc}") from exc
            except (_Uncommitted, PoolTimeout) as exc:
                cause = exc.__cause__ or exc
                if time.monotonic() >= deadline:
                    raise JournalError(f"journal database unavailable: {cause}") from cause
                log.warning("journal.database_unavailable", error=str(cause))
                await asyncio.sleep(0.5)

    async def _attempt(self, make: Callable[[], Op[T]], wait: float, *, write: bool) -> T:
        async with self._pool.connection(timeout=wait) as conn:
            if not write:
                # Under READ COMMITTED every statement reads its own snapshot, in a transaction
                # or not: a read saves the BEGIN and COMMIT round trips.
                try:
                    return await run_async(conn, make())
                except psycopg.OperationalError as exc:
                    raise _Uncommitted() from exc
            committing = False
            try:
                async with conn.pipeline() as pipeline, conn.transaction():
                    result = await run_async(conn, make(), pipeline)
                    committing = True  # leaving the block sends COMMIT
            except psycopg.OperationalError as exc:
                if committing:
                    raise JournalError(f"journal commit in doubt (the database connection failed): {exc}") from exc
                raise _Uncommitted() from exc
            return result
