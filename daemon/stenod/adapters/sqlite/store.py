"""The SQLite connection discipline: one writer thread, group commit, never on the loop.

Every operation is a plain function of a ``sqlite3.Connection``. Operations queued
while a transaction is running are committed together in the next one (group commit:
one fsync for many jobs under load), each inside its own SAVEPOINT so one failing
operation does not take the others down. WAL, ``synchronous=FULL`` (a commit lost to
power failure could mean a duplicate paid submission), ``busy_timeout``, and an
integrity check at start-up.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from stenod.adapters.thread_lane import Call, Outcome, ThreadLane
from stenod.errors import ConfigError, JournalError

log = structlog.get_logger("stenod.journal")


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


class WriterThread(ThreadLane[sqlite3.Connection]):
    """Owns the only write connection of the daemon and runs operations in order; each
    group of queued operations is one transaction."""

    def __init__(self, path: Path, migrate: Callable[[sqlite3.Connection, Path], int]) -> None:
        super().__init__("journal-writer")
        self._path = path
        self._migrate = migrate
        self.waiting_for_space = False  # a group is held back by SQLITE_FULL (set in this thread)

    def start(self) -> None:
        try:
            super().start()
        except ConfigError:
            raise
        except BaseException as exc:
            raise JournalError(f"journal {self._path} cannot be opened: {exc}") from exc

    def _closed_error(self) -> Exception:
        return JournalError("journal is closed")

    def _open(self) -> sqlite3.Connection:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        conn = connect(self._path)
        result = conn.execute("PRAGMA quick_check").fetchone()[0]
        if result != "ok":
            raise JournalError(f"integrity check failed: {result}")
        try:
            self._migrate(conn, self._path)
        except BaseException:
            conn.close()
            raise
        return conn

    def _close_resource(self, resource: sqlite3.Connection) -> None:
        resource.close()

    def _execute(self, conn: sqlite3.Connection, group: list[Call]) -> list[Outcome]:
        # A full disk (SQLITE_FULL) rolls the whole group back and runs it again once there
        # is room: its callers wait, so a file is not marked seen, a message not acked, an
        # item not finished, until its commit is durable. Only stopping ends the wait.
        waited = 0.0
        while True:
            outcomes = self._transaction(conn, group)
            self.waiting_for_space = any(_disk_full(exc) for _, _, exc in outcomes) and not self._closed
            if not any(_disk_full(exc) for _, _, exc in outcomes):
                if waited:
                    log.info("journal.disk_space_back", waited_seconds=round(waited, 1))
                return outcomes
            if self._closed:
                full = JournalError(f"journal {self._path} cannot commit: its disk is full")
                return [(fut, None, full if _disk_full(exc) else exc) for fut, _, exc in outcomes]
            if waited % _FULL_REPORT_SECONDS < _FULL_RETRY_SECONDS:
                log.error(
                    "journal.disk_full",
                    path=str(self._path),
                    waited_seconds=round(waited, 1),
                    hint="free space on the journal's filesystem; writes resume by themselves",
                )
            time.sleep(_FULL_RETRY_SECONDS)
            waited += _FULL_RETRY_SECONDS

    def _transaction(self, conn: sqlite3.Connection, group: list[Call]) -> list[Outcome]:
        writes = any(write for _, _, write in group)
        outcomes: list[Outcome] = []
        try:
            conn.execute("BEGIN IMMEDIATE" if writes else "BEGIN")
        except sqlite3.Error as exc:
            return [(fut, None, JournalError(f"journal unavailable: {exc}")) for _, fut, _ in group]
        for op, fut, _ in group:
            conn.execute("SAVEPOINT op")
            try:
                result = op(conn)
            except BaseException as exc:
                if _disk_full(exc):
                    _rollback(conn)
                    return [(f, None, exc) for _, f, _ in group]
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
            _rollback(conn)
            log.error("journal.commit_failed", error=str(exc))
            failure = exc if _disk_full(exc) else JournalError(f"journal commit failed: {exc}")
            outcomes = [(fut, None, failure) for fut, _, _ in outcomes]
        return outcomes


_FULL_RETRY_SECONDS = 1.0
_FULL_REPORT_SECONDS = 30.0


def _disk_full(exc: BaseException | None) -> bool:
    return isinstance(exc, sqlite3.Error) and getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


def _rollback(conn: sqlite3.Connection) -> None:
    # SQLite may already have rolled back a transaction that hit SQLITE_FULL.
    if conn.in_transaction:
        conn.execute("ROLLBACK")
