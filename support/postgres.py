"""PostgreSQL for the tests: the machine's server on 127.0.0.1:5432 (user postgres, no
password; ``tests/setup-system.sh`` starts it), a database of its own for each test."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import psycopg

ADMIN_URL = os.environ.get("STENOD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def database_url(name: str) -> str:
    base, _, _ = ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


@contextlib.contextmanager
def fresh_database(prefix: str = "stenod_t") -> Iterator[str]:
    """A new, empty database; yields its URL and drops it afterwards (with any sessions left)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"'.encode())
    try:
        yield database_url(name)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


def terminate_sessions(url: str) -> int:
    """Cut every session on the database of ``url`` (what a restart of the server does to them)."""
    name = url.rpartition("/")[2]
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchall()
    return len(rows)
