"""One daemon per instance id: a session advisory lock on the id, held while it runs.

The provider jobs an instance holds are leased under its id, and a daemon that restarts
takes back its own leases at once (it knows what it was doing). Two daemons that shared
an id would therefore both step the same jobs; the first one holds this lock, a second
is refused at start with the first one's name, and a daemon whose lock was lost with its
connection (the database restarted) takes it again, or stops if another daemon with the
same id took it meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import time
from typing import Any

import psycopg

from stenod.adapters.postgres.driver import CONNECTION_OPTIONS
from stenod.errors import JournalError, JournalInUse

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


def lock_key(instance_id: str) -> int:
    """The advisory lock's 63-bit key for an instance id (two ids colliding is a 2^-63 chance)."""
    digest = hashlib.sha256(b"stenod instance\0" + instance_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


class InstanceLock:
    """The lock, on a connection of its own (a pooled one would lend it to others)."""

    def __init__(self, url: str, where: str, instance_id: str) -> None:
        self._url = url
        self._where = where
        self._instance_id = instance_id
        self._key = lock_key(instance_id)
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
            cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (self._key,))
            row = await cur.fetchone()
            if row is not None and row[0]:
                self._conn = conn
                return
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(1.0)
        cur = await conn.execute(_HOLDER_SQL, (self._key >> 32, self._key & 0xFFFF_FFFF))
        holder = await cur.fetchone()
        await conn.close()
        who = f"{holder[0] or 'another client'} from {holder[1] or 'this machine'}" if holder else "another stenod"
        raise JournalInUse(
            f"instance_id {self._instance_id!r} is already running on the journal database {self._where}: "
            f"{who}. Each stenod sharing a journal needs its own instance_id (the default, host "
            "name and state directory, differs unless two daemons share both); stop the other, or name this one"
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
            raise JournalError(f"lost the instance lock while the database was away: {exc}") from None
        except psycopg.OperationalError:
            return False
        return True

    async def aclose(self) -> None:
        if self._conn is not None:
            await self._conn.close()  # the lock goes with the session
