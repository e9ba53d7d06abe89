"""PostgreSQL in a cluster chaos run: the server's restarts (a real stop and start of the
machine's cluster, found with ``pg_lsclusters``), a record of when the database was away
(a daemon that exits 1 then is doing what it must), and the checker's read-only view of
the shared journal.

The server is shared with whatever else runs on this machine, like the broker: a restart
is kept short, and the server is always started again, also when a run fails.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import dict_row

from support.postgres import terminate_sessions

_CTL_SECONDS = 120.0


def server() -> tuple[str, str]:
    """(version, cluster name) of the PostgreSQL the tests use: ``STENOD_TEST_PG_CLUSTER``
    (``15/chaos``, the cluster STENOD_TEST_POSTGRES points at, so that a chaos run on a
    server of its own never restarts the one other people's tests use), else the machine's
    (``pg_lsclusters``' first line)."""
    if named := os.environ.get("STENOD_TEST_PG_CLUSTER"):
        version, _, cluster = named.partition("/")
        return version, cluster
    out = subprocess.run(["pg_lsclusters", "-h"], check=True, capture_output=True, text=True, timeout=30).stdout
    version, cluster, *_ = out.split()
    return version, cluster


def _running(version: str, cluster: str) -> bool:
    out = subprocess.run(["pg_lsclusters", "-h", version, cluster], capture_output=True, text=True, timeout=30).stdout
    return " online" in out


def _ctl(action: str, *extra: str) -> None:
    version, cluster = server()
    subprocess.run(["pg_ctlcluster", version, cluster, action, *extra], check=True, timeout=_CTL_SECONDS)


def ensure_running() -> None:
    """Start the server if it is down (a run that failed in the middle of a restart)."""
    version, cluster = server()
    if not _running(version, cluster):
        _ctl("start")


def restart(away_seconds: float) -> None:
    """Stop the server (``-m fast``: every session is cut, as a crash or an upgrade does),
    keep it away, start it again whatever happens (``start`` waits until it accepts connections)."""
    _ctl("stop", "-m", "fast")
    try:
        time.sleep(away_seconds)
    finally:
        _ctl("start")


def cut_sessions(url: str) -> int:
    """Cut every session on the run's own database (the server stays up)."""
    return terminate_sessions(url)


@dataclass
class Outages:
    """When the database was away (or its sessions cut), so the supervisor can tell a
    daemon that exited 1 because of it (restarted, as systemd does) from a crash."""

    slack_seconds: float = 10.0
    _spans: list[list[float | None]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def begin(self) -> int:
        with self._lock:
            self._spans.append([time.monotonic(), None])
            return len(self._spans) - 1

    def end(self, token: int) -> None:
        with self._lock:
            self._spans[token][1] = time.monotonic()

    def near(self, when: float) -> bool:
        """Was the database away at ``when``, or shortly before (an exit follows the outage)?"""
        with self._lock:
            for start, end in self._spans:
                assert start is not None
                if start - 1.0 <= when <= (end if end is not None else when) + self.slack_seconds:
                    return True
        return False

    @property
    def count(self) -> int:
        return len(self._spans)


def query(url: str, sql: str) -> list[dict[str, Any]]:
    """Rows of a read (the checker never writes the daemons' journal)."""
    with psycopg.connect(url, row_factory=dict_row) as conn:
        conn.read_only = True
        return conn.execute(sql.encode()).fetchall()


def tables(url: str) -> list[str]:
    return [r["table_name"] for r in query(url, _TABLES)]


_TABLES = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name"


def dump(url: str) -> str:
    """Every row of every table as text, to search for secrets as a person would read them."""
    return "\n".join(f"{name}: {row}" for name in tables(url) for row in query(url, f'SELECT * FROM "{name}"'))


def integrity(url: str) -> str:
    """PostgreSQL keeps its own pages whole; what the checker can see is the journal's own
    consistency: items pointing at provider jobs that do not exist, events of unknown jobs."""
    problems = [
        f"{r['n']} {what}"
        for what, sql in (
            ("items in provider jobs that do not exist", _DANGLING_ITEMS),
            ("job events of jobs that do not exist", _DANGLING_EVENTS),
        )
        for r in query(url, sql)
        if r["n"]
    ]
    return "; ".join(problems) or "ok"


_DANGLING_ITEMS = (
    "SELECT count(*) AS n FROM items i WHERE i.batch_id IS NOT NULL "
    "AND NOT EXISTS (SELECT 1 FROM batches b WHERE b.id = i.batch_id)"
)
_DANGLING_EVENTS = (
    "SELECT count(*) AS n FROM job_events e WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = e.job_id)"
)
