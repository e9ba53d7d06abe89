"""Running the journal's operations on PostgreSQL: a pool of async connections; reads on
any free one, writes committed in groups (:mod:`.write_groups`).

Round trips are what an operation costs here (on a busy machine, more than the SQL): the
statements whose answer an operation does not read are sent together with the next one
it reads, and the last ones with the COMMIT, as one query with the values bound on the
client. A transaction of five inserts is one or two round trips, not seven.

An operation that loses a race with another instance (two intakes of one ``request_id``,
a serialization failure, a deadlock) is simply run again: it reads what the winner
committed. One that fails because the database went away is run again, on a new
connection, while the failure came before the commit (nothing was written), for up to
``reconnect_seconds``. A commit whose answer was lost is in doubt: that one stops the
daemon (JournalError), whose restart reads the journal as it really is, rather than
guessing, which could create a job twice.

A database whose disk is full (SQLSTATE 53100, ``disk_full``) answered, so nothing is in
doubt: the transaction is rolled back and run again every second until there is room, as
the SQLite writer does on SQLITE_FULL. Its callers wait (a file is not marked seen, a
message not acked, an item not finished before its commit is durable); meanwhile
:attr:`PoolDriver.waiting_for_space` is true, which turns new jobs away with 507 and
``/healthz`` to 503. Only closing ends the wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import psycopg
import structlog
from psycopg import AsyncClientCursor, AsyncConnection, errors
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from stenod.adapters.postgres.write_groups import WriteGroups
from stenod.adapters.sql.statements import All, Exec, Many, One, Op
from stenod.errors import JournalError

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
_OPEN = (TransactionStatus.INTRANS, TransactionStatus.INERROR)
_RACE_ATTEMPTS = 5
_WAIT_REPORT_SECONDS = 5.0
_FULL_RETRY_SECONDS = 1.0
_FULL_REPORT_SECONDS = 30.0


@functools.lru_cache(maxsize=512)
def dialect(sql: str) -> bytes:
    """A shared statement in psycopg's placeholder style (``?`` → ``%s``, a literal ``%`` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s").encode()


async def run_async(conn: AsyncConnection[Any], op: Op[T]) -> T:
    """Run an operation on a connection, outside a transaction (reads, each statement its
    own snapshot)."""
    cur = AsyncClientCursor(conn, row_factory=dict_row)
    result, pending = await _run(cur, op, [])
    if pending:
        await cur.execute(_joined(pending))
    return result


def _joined(statements: list[str]) -> bytes:
    return ";\n".join(statements).encode()


async def _run(cur: AsyncClientCursor[Any], op: Op[T], pending: list[str]) -> tuple[T, list[str]]:
    """Run an operation, sending statements whose result it does not read together with
    the next one it reads: one round trip each time the operation needs an answer (the
    values are bound on the client, so that several statements go as one query).
    ``pending``: statements to send first (a BEGIN, what the operation before it left).
    Returns the result and the statements not yet sent (they go with the next round trip,
    at the latest with the COMMIT)."""
    try:
        statement = next(op)
        while True:
            result: Any = None
            if isinstance(statement, Many):
                pending.extend(cur.mogrify(dialect(statement.sql), tuple(r)) for r in statement.rows)
            elif isinstance(statement, Exec):
                pending.append(cur.mogrify(dialect(statement.sql), tuple(statement.args)))
            else:
                pending.append(cur.mogrify(dialect(statement.sql), tuple(statement.args)))
                await cur.execute(_joined(pending))
                pending = []
                while cur.nextset():
                    pass  # the answer is the last statement's
                if isinstance(statement, All):
                    result = await cur.fetchall()
                elif isinstance(statement, One):
                    result = await cur.fetchone()
                else:
                    result = cur.rowcount
            statement = op.send(result)
    except StopIteration as stop:
        return stop.value, pending


class _Uncommitted(Exception):
    """The connection failed before COMMIT was sent: nothing was written, try again."""


class _NoSpace(Exception):
    """The database refused the transaction for want of disk space: nothing was written."""

    def __init__(self, *, write: bool) -> None:
        super().__init__()
        self.write = write  # a read that spilled to a temporary file does not make the journal "full"


class PoolDriver:
    """The journal's driver on a psycopg pool: reads on any free connection, writes
    committed in groups (:class:`WriteGroups`)."""

    def __init__(self, pool: AsyncConnectionPool[Any], *, reconnect_seconds: float) -> None:
        self._pool = pool
        self._reconnect_seconds = reconnect_seconds
        self._groups = WriteGroups(self._together, self._alone)
        self._closing = False
        self.waiting_for_space = False  # a write waits for the database's disk to have room

    async def run(self, make: Callable[[], Op[T]], *, write: bool) -> T:
        if write:
            return await self._groups.run(make)
        return await self._retrying(lambda wait: self._read(make, wait))

    async def aclose(self) -> None:
        self._closing = True  # a write waiting for disk space gives up (JournalError)
        await self._groups.aclose()

    async def _alone(self, make: Callable[[], Op[T]]) -> T:
        results = await self._retrying(lambda wait: self._transact([make], wait))
        return results[0]  # type: ignore[no-any-return]

    async def _together(self, makes: Sequence[Callable[[], Op[Any]]]) -> list[Any]:
        return await self._transact(makes, _WAIT_REPORT_SECONDS)

    async def _retrying(self, attempt: Callable[[float], Awaitable[T]]) -> T:
        deadline = time.monotonic() + self._reconnect_seconds
        races = 0
        full_since: float | None = None
        while True:
            try:
                # A few seconds at a time, so that waiting for a database that went away is
                # reported while it lasts, not only when reconnect_seconds are over.
                result = await attempt(min(max(deadline - time.monotonic(), 0.5), _WAIT_REPORT_SECONDS))
                if full_since is not None:
                    log.info("journal.disk_space_back", waited_seconds=round(time.monotonic() - full_since, 1))
                return result
            except _NoSpace as exc:
                if self._closing:
                    raise JournalError("journal database cannot commit: its disk is full") from exc.__cause__
                now = time.monotonic()
                if full_since is None or (now - full_since) % _FULL_REPORT_SECONDS < _FULL_RETRY_SECONDS:
                    log.error(
                        "journal.disk_full",
                        error=str(exc.__cause__),
                        waited_seconds=round(now - full_since, 1) if full_since else 0.0,
                        hint="free space on the journal database's disk; writes resume by themselves",
                    )
                full_since = full_since or now
                self.waiting_for_space = self.waiting_for_space or exc.write
                await asyncio.sleep(_FULL_RETRY_SECONDS)
                deadline = time.monotonic() + self._reconnect_seconds  # waiting for space is not an outage
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

    async def _read(self, make: Callable[[], Op[T]], wait: float) -> T:
        async with self._pool.connection(timeout=wait) as conn:
            # Under READ COMMITTED every statement reads its own snapshot, in a transaction
            # or not: a read saves the BEGIN and COMMIT.
            try:
                return await run_async(conn, make())
            except errors.DiskFull as exc:  # a read that spills to a temporary file
                raise _NoSpace(write=False) from exc
            except psycopg.OperationalError as exc:
                raise _Uncommitted() from exc

    async def _transact(self, makes: Sequence[Callable[[], Op[Any]]], wait: float) -> list[Any]:
        """The operations one after another in one transaction; all of them or none."""
        async with self._pool.connection(timeout=wait) as conn:
            cur = AsyncClientCursor(conn, row_factory=dict_row)
            committing = False
            try:
                try:
                    results = []
                    pending = ["BEGIN"]
                    for make in makes:
                        result, pending = await _run(cur, make(), pending)
                        results.append(result)
                    committing = True  # the COMMIT goes with the statements not yet sent
                    await cur.execute(_joined([*pending, "COMMIT"]))
                except errors.DiskFull as exc:
                    # The server answered (nothing in doubt) and the transaction is aborted.
                    with contextlib.suppress(psycopg.Error):
                        await conn.execute(b"ROLLBACK")
                    raise _NoSpace(write=True) from exc
                except (psycopg.OperationalError, asyncio.CancelledError):
                    raise  # the pool discards a connection left busy or broken
                except BaseException:
                    # A statement that failed, or an operation itself (a lost lease): undo
                    # what was written before the connection goes back to the pool.
                    if conn.info.transaction_status in _OPEN:
                        with contextlib.suppress(psycopg.Error):
                            await conn.execute(b"ROLLBACK")
                    raise
            except psycopg.OperationalError as exc:
                if committing:
                    raise JournalError(f"journal commit in doubt (the database connection failed): {exc}") from exc
                raise _Uncommitted() from exc
            self.waiting_for_space = False
            return results
