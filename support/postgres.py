"""PostgreSQL for the tests: the machine's server on 127.0.0.1:5432 (user postgres, no
password; ``tests/setup-system.sh`` starts it), a database of its own for each test; and a
throw-away server of a test's own for what must not happen to the shared one (a full disk)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg

from support.server import free_port

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


PG_BIN = Path(os.environ.get("STENOD_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


@contextlib.contextmanager
def throwaway_cluster(size: str = "48m") -> Iterator[tuple[str, Path]]:
    """A PostgreSQL server of its own, never the machine's: its data directory on a tmpfs of
    ``size`` mounted for it (a disk the test may fill), its WAL beside it on the ordinary disk
    (a WAL write that finds no room is a PANIC, which is not the case under test), on a free
    port of 127.0.0.1, stopped and unmounted afterwards. Yields (URL of database ``postgres``,
    the data directory's filesystem). Needs root (``mount``) and the ``postgres`` user."""
    base = Path(tempfile.mkdtemp(prefix="stenod-pg-"))
    fs, wal, log = base / "fs", base / "wal", base / "server.log"
    fs.mkdir()
    shutil.chown(base, "postgres", "postgres")
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},uid=postgres,gid=postgres,mode=0700", "tmpfs", fs], check=True
    )
    data = fs / "data"
    port = free_port()
    as_postgres = ["runuser", "-u", "postgres", "--"]
    try:
        subprocess.run(
            [*as_postgres, PG_BIN / "initdb", "-D", data, "--waldir", wal, "-U", "postgres", "--auth=trust",
             "-E", "UTF8", "--locale=C.UTF-8", "--wal-segsize=1", "--no-sync"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={base} -c shared_buffers=16MB"
        subprocess.run(
            [*as_postgres, PG_BIN / "pg_ctl", "-D", data, "-l", log, "-o", options, "-w", "start"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres", fs
        finally:
            subprocess.run(
                [*as_postgres, PG_BIN / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"],
                check=False, capture_output=True, timeout=120,
            )  # fmt: skip
    finally:
        subprocess.run(["umount", "-l", fs], check=False)
        shutil.rmtree(base, ignore_errors=True)
