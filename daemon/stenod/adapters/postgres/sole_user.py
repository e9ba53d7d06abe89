"""One daemon per journal database, for now: a session advisory lock held while it runs.

Several instances on one database need leases on the work they hold (who steps which
provider job, taken over when its holder dies); until stenod has them, a second daemon
on the same database would step the same provider jobs as the first. So the first one
holds this lock, a second is refused at start with the first one's name, and a daemon
whose lock was lost with its connection (the database restarted) takes it again, or
stops if another daemon took it meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from typing import Any

import psycopg

from stenod.adapters.postgres.driver import CONNECTION_OPTIONS
from stenod.errors import ConfigError
from stenod.journal import JournalError

_KEY = 0x5733_0D00_0000_0002  # "stenod: the journal's user"
_IDLE_SECONDS = 15  # check() runs every few seconds; a session silent this long has no daemon behind it
_HOLDER_SQL = """
SELECT a.application_name, host(a.client_addr) AS addr
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


def application_name() -> str:
    """How this daemon shows in ``pg_stat_activity`` (and in another daemon's refusal)."""
    return f"stenod {socket.gethostname()} pid {os.getpid()}"[:63]


class JournalInUse(ConfigError):
    """Another stenod uses this journal database (exit 2: a person must choose)."""


class SoleUser:
    """The lock, on a connection of its own (a pooled one would lend it to others)."""

    def __init__(self, url: str, where: str) -> None:
        self._url = url
        self._where = where
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def acquire(self, *, wait_seconds: float = 0.0) -> None:
        """Take the lock, waiting up to ``wait_seconds`` for it (the session of a daemon that
        vanished with its network ends after ``_IDLE_SECONDS``); raises JournalInUse naming
        the daemon that has it."""
        conn = await psycopg.AsyncConnection.connect(
            self._url, **CONNECTION_OPTIONS, application_name=application_name()
        )
        # The server ends this session if it stays idle: when this daemon is gone without
        # closing it (power off, network cut), the lock is free again within seconds, not
        # after hours of TCP keepalive. check() keeps a living daemon's session busy. (Before
        # PostgreSQL 14 there is no such setting: the lock lasts until the server notices.)
        with contextlib.suppress(psycopg.errors.UndefinedObject):
            await conn.execute(f"SET idle_session_timeout = '{_IDLE_SECONDS}s'".encode())
        deadline = time.monotonic() + wait_seconds
        while True:
            cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (_KEY,))
            row = await cur.fetchone()
            if row is not None and row[0]:
                self._conn = conn
                return
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(1.0)
        cur = await conn.execute(_HOLDER_SQL, (_KEY >> 32, _KEY & 0xFFFF_FFFF))
        holder = await cur.fetchone()
        await conn.close()
        who = f"{holder[0] or 'another client'} from {holder[1] or 'this machine'}" if holder else "another stenod"
        raise JournalInUse(
            f"the journal database {self._where} is in use by {who}. One stenod per journal database: give "
            "this one a database of its own ([journal] url), or stop the other"
        )

    @property
    def held(self) -> bool:
        return self._conn is not None and not self._conn.closed

    async def check(self) -> bool:
        """Still held? A lock lost with its connection is taken again; False while the
        database cannot be reached; JournalError if another daemon took it meanwhile."""
        if self._conn is not None and not self._conn.closed:
            try:
                await self._conn.execute("SELECT 1")
                return True
            except psycopg.OperationalError:
                await self._conn.close()
                self._conn = None
        try:
            await self.acquire()
        except JournalInUse as exc:
            raise JournalError(f"lost the journal while its database was away: {exc}") from None
        except psycopg.OperationalError:
            return False
        return True

    async def aclose(self) -> None:
        if self._conn is not None:
            await self._conn.close()  # the lock goes with the session
