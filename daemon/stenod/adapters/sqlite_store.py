"""The SQLite connection discipline: one writer thread, group commit, never on the loop.

Every operation is a plain function of a ``sqlite3.Connection``. Operations queued
while a transaction is running are committed together in the next one (group commit:
one fsync for many jobs under load), each inside its own SAVEPOINT so one failing
operation does not take the others down. WAL, ``synchronous=FULL`` (a commit lost to
power failure could mean a duplicate paid submission), ``busy_timeout``, and an
integrity check at start-up.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import structlog

from stenod.errors import StenodError

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], Any]
log = structlog.get_logger("stenod.journal")

_MAX_GROUP = 512


class JournalError(StenodError):
    """The journal cannot be used (corrupt, unwritable): the daemon must stop."""


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 10000")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


class WriterThread:
    """Owns the only write connection of the daemon and runs operations in order."""

    def __init__(self, path: Path, schema: str) -> None:
        self._path = path
        self._schema = schema
        self._queue: queue.SimpleQueue[tuple[Op, asyncio.Future[Any], bool] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="journal-writer", daemon=True)
        self._started = threading.Event()
        self._startup_error: BaseException | None = None
        self._closed = False

    def start(self) -> None:
        self._thread.start()
        self._started.wait()
        if self._startup_error is not None:
            raise JournalError(f"journal {self._path} cannot be opened: {self._startup_error}") from self._startup_error

    async def call(self, op: Callable[[sqlite3.Connection], T], *, write: bool = True) -> T:
        if self._closed:
            raise JournalError("journal is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put((op, future, write))
        return await future

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=30)

    # -- thread side ---------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        conn = connect(self._path)
        result = conn.execute("PRAGMA quick_check").fetchone()[0]
        if result != "ok":
            raise JournalError(f"integrity check failed: {result}")
        conn.executescript(self._schema)
        return conn

    def _run(self) -> None:
        try:
            conn = self._open()
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
                self._execute(conn, group)
                if stop:
                    return
        finally:
            conn.close()

    def _execute(self, conn: sqlite3.Connection, group: list[tuple[Op, asyncio.Future[Any], bool]]) -> None:
        writes = any(write for _, _, write in group)
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE" if writes else "BEGIN")
        except sqlite3.Error as exc:
            for _, fut, _ in group:
                outcomes.append((fut, None, JournalError(f"journal unavailable: {exc}")))
            self._deliver(outcomes)
            return
        for op, fut, _ in group:
            conn.execute("SAVEPOINT op")
            try:
                result = op(conn)
            except BaseException as exc:
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
                outcomes.append((fut, None, exc))
            else:
                conn.execute("RELEASE op")
                if isinstance(result, sqlite3.Cursor):
                    # No sqlite3 object may leave this thread: a cursor released on the event
                    # loop's thread resets its statement there, racing this thread's use of the
                    # same cached statement ("bad parameter or other API misuse", CPython #118172).
                    result.close()
                    result = None
                outcomes.append((fut, result, None))
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK")
            log.error("journal.commit_failed", error=str(exc))
            outcomes = [(fut, None, JournalError(f"journal commit failed: {exc}")) for fut, _, _ in outcomes]
        self._deliver(outcomes)

    @staticmethod
    def _deliver(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
        # One wake-up of each loop per committed group, not one per operation.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, BaseException | None]]] = {}
        for outcome in outcomes:
            by_loop.setdefault(outcome[0].get_loop(), []).append(outcome)
        for loop, batch in by_loop.items():
            if not loop.is_closed():
                loop.call_soon_threadsafe(_settle_all, batch)


def _settle_all(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for fut, result, exc in outcomes:
        if fut.done():
            continue
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)
