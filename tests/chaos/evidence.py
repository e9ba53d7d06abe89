"""What the chaos checker reads after a run: the journal (read-only: the SQLite file of a
single daemon, or the PostgreSQL database a cluster shares), the providers' own records
of the remote jobs they created, and the daemons' logs."""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from tests.chaos import postgres

JournalSource = Path | str  # a SQLite file, or a PostgreSQL URL
TERMINAL = frozenset({"succeeded", "partial", "failed", "cancelled"})


@dataclass(frozen=True, slots=True)
class JobRow:
    job_id: str
    request_id: str | None
    source: str
    provider: str
    state: str
    output: dict[str, Any]
    instance: str | None = None  # the daemon that accepted it (a shared journal)


@dataclass(frozen=True, slots=True)
class ItemRow:
    item_id: str
    job_id: str
    input: str
    name: str
    state: str
    batch_id: str | None
    outputs: tuple[str, ...]
    error_code: str | None


@dataclass(frozen=True, slots=True)
class BatchRow:
    batch_id: str
    provider: str
    state: str


@dataclass(frozen=True, slots=True)
class Journal:
    jobs: dict[str, JobRow]
    items: list[ItemRow]
    batches: dict[str, BatchRow]
    outbox: int

    def jobs_by_input(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = defaultdict(list)
        for item in self.items:
            out[item.input].append(item.job_id)
        return out

    def names_by_batch(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = defaultdict(set)
        for item in self.items:
            if item.batch_id is not None:
                out[item.batch_id].add(item.name)
        return out


def connect_ro(path: Path) -> sqlite3.Connection:
    """A read-only connection: the checker never writes the daemon's journal."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    conn.row_factory = sqlite3.Row
    return conn


def _rows(source: JournalSource, sql: str) -> list[dict[str, Any]]:
    """The rows of a read, from either backend (the tables and columns are the same)."""
    if isinstance(source, str):
        return postgres.query(source, sql)
    with connect_ro(source) as conn:
        return [dict(r) for r in conn.execute(sql)]


def read_journal(source: JournalSource) -> Journal:
    jobs = {
        r["id"]: JobRow(
            r["id"],
            r["request_id"],
            r["source"],
            r["provider"],
            r["state"],
            json.loads(r["output"] or "{}"),
            r.get("instance"),
        )
        for r in _rows(source, "SELECT * FROM jobs")
    }
    items = [
        ItemRow(
            r["id"],
            r["job_id"],
            r["input"],
            r["name"],
            r["state"],
            r["batch_id"],
            tuple(json.loads(r["outputs"] or "[]")),
            (json.loads(r["error"]) or {}).get("code") if r["error"] else None,
        )
        for r in _rows(source, "SELECT * FROM items")
    ]
    batches = {r["id"]: BatchRow(r["id"], r["provider"], r["state"]) for r in _rows(source, "SELECT * FROM batches")}
    outbox = int(_rows(source, "SELECT count(*) AS n FROM outbox")[0]["n"])
    return Journal(jobs, items, batches, outbox)


_TERMINAL_SQL = ", ".join(f"'{state}'" for state in sorted(TERMINAL))  # constants, not input
_PROGRESS_SQL = (
    "SELECT (SELECT count(*) FROM jobs) AS total, "
    f"(SELECT count(*) FROM jobs WHERE state NOT IN ({_TERMINAL_SQL})) AS open, "
    "(SELECT count(*) FROM outbox) AS outbox"
)


def progress(source: JournalSource) -> tuple[int, int, int]:
    """(jobs, jobs not yet terminal, events waiting in the outbox), cheaply, while it runs."""
    if isinstance(source, Path) and not source.exists():
        return 0, 0, 0
    try:
        row = _rows(source, _PROGRESS_SQL)[0]
    except psycopg.OperationalError:
        return 0, 0, 0  # the server is being restarted: ask again later
    return int(row["total"]), int(row["open"]), int(row["outbox"])


def journal_dump(source: JournalSource) -> str:
    """The journal as text (as a person would inspect it), plus a SQLite journal's raw files' bytes."""
    if isinstance(source, str):
        return postgres.dump(source)
    with connect_ro(source) as conn:
        text = "\n".join(conn.iterdump())
    raw = b"".join(p.read_bytes() for p in sorted(source.parent.glob(source.name + "*")))
    return text + "\n" + raw.decode("utf-8", "replace")


def integrity(source: JournalSource) -> str:
    if isinstance(source, str):
        return postgres.integrity(source)
    with connect_ro(source) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


@dataclass(frozen=True, slots=True)
class RemoteJobs:
    """Remote jobs as the providers saw them: per input name, the remote jobs holding it
    (only jobs that were started, i.e. billed), and remote jobs nobody continued."""

    by_name: dict[str, set[str]]
    abandoned: int


def echo_jobs(ledger: Path) -> RemoteJobs:
    """Echo's ``created.log``: one line per creation, ``<remote id> <name>…``. Its remote
    id is derived from the batch, like a provider idempotency key."""
    by_name: dict[str, set[str]] = defaultdict(set)
    path = ledger / "created.log"
    for line in path.read_text().splitlines() if path.exists() else []:
        remote, *names = line.split(" ")
        for name in names:
            by_name[name].add(remote)
    return RemoteJobs(by_name, 0)


def sarvam_jobs(stats: dict[str, Any]) -> RemoteJobs:
    by_name: dict[str, set[str]] = defaultdict(set)
    abandoned = 0
    for job_id, job in stats["jobs"].items():
        if not job["starts"]:
            abandoned += 1  # created, never started: nothing ran, nothing billed
            continue
        for name in job["requested"]:
            by_name[name].add(job_id)
    return RemoteJobs(by_name, abandoned)


def vachana_jobs(stats: dict[str, Any], finished_batches: set[str]) -> RemoteJobs:
    """Vachana's jobs carry ``X-API-Request-ID: stenod-<batch id>``; a job whose batch did
    not finish is one whose answer was lost (the files failed as "uncertain", not resent)."""
    by_name: dict[str, set[str]] = defaultdict(set)
    abandoned = 0
    for job_id, job in stats["jobs"].items():
        for name, _size in job["files"]:
            by_name[name].add(job_id)
        if (job["request_id"] or "").removeprefix("stenod-") not in finished_batches:
            abandoned += 1
    return RemoteJobs(by_name, abandoned)


def log_events(log: Path) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out
