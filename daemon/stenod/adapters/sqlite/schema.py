"""The journal's tables, versioned with SQLite's ``user_version``.

Each entry of :data:`MIGRATIONS` takes the journal from one version to the next, in one
transaction, and the daemon applies the missing ones at start-up. Version 1 is the schema
of the releases before versioning (their journals read ``user_version`` 0 and get every
step from 1, which changes nothing they already have). A journal written by a newer
stenod than this one is refused with a message, never half-read.
"""

from __future__ import annotations

import sqlite3

from stenod.errors import SchemaTooNew

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate"]


MIGRATIONS: tuple[str, ...] = (
    # 1: jobs, items, provider jobs, seen files, the outbox.
    """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    request_id TEXT UNIQUE,
    source TEXT NOT NULL,
    task TEXT NOT NULL,
    provider TEXT NOT NULL,
    language TEXT,
    target_languages TEXT NOT NULL DEFAULT '[]',
    options TEXT NOT NULL DEFAULT '{}',
    output TEXT NOT NULL DEFAULT '{}',
    state TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    error TEXT,
    cost TEXT,
    reply_to TEXT,
    correlation_id TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES jobs(id),
    idx INTEGER NOT NULL,
    input TEXT NOT NULL,
    path TEXT,
    name TEXT NOT NULL,
    size INTEGER,
    device INTEGER,
    inode INTEGER,
    content_hash TEXT,
    state TEXT NOT NULL,
    batch_id TEXT,
    task TEXT,              -- per-item overrides of the job's (a chained translation step)
    provider TEXT,
    target_languages TEXT,
    options TEXT,
    outputs TEXT NOT NULL DEFAULT '[]',
    error TEXT,
    result TEXT,
    cost TEXT,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS items_job ON items(job_id);
CREATE INDEX IF NOT EXISTS items_open ON items(state, batch_id) WHERE state IN ('pending', 'fetched');
CREATE INDEX IF NOT EXISTS items_batch ON items(batch_id) WHERE batch_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS items_hash ON items(content_hash) WHERE content_hash IS NOT NULL;
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    state TEXT NOT NULL,
    handle TEXT,
    checkpoint TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    last_poll_at REAL,
    error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS batches_active ON batches(state) WHERE state NOT IN ('done', 'failed');
CREATE TABLE IF NOT EXISTS seen_files (
    rule TEXT NOT NULL,
    path TEXT NOT NULL,
    device INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    job_id TEXT,
    PRIMARY KEY (rule, path)
);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    job_id TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    body TEXT NOT NULL,
    reply_to TEXT,
    correlation_id TEXT,
    created_at TEXT NOT NULL
);
""",
    # 2: every event of every job, for the HTTP event stream and the page.
    """-- Every event of every job, kept with the job: the HTTP event stream and the page replay
-- them. The outbox above holds only those the broker has not yet confirmed.
CREATE TABLE IF NOT EXISTS job_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    job_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS job_events_job ON job_events(job_id, seq);
CREATE INDEX IF NOT EXISTS job_events_id ON job_events(event_id);
""",
    # 3: corrections by hand and retries linked to their job.
    """-- Corrections by hand: the item's transcript as a person fixed it (items.result keeps the
-- engine's, for revert).
CREATE TABLE IF NOT EXISTS item_edits (
    item_id TEXT PRIMARY KEY REFERENCES items(id),
    transcript TEXT NOT NULL,
    edited_at TEXT NOT NULL
);
-- A job started again from the page with the inputs of an earlier one.
CREATE TABLE IF NOT EXISTS job_retries (
    job_id TEXT PRIMARY KEY REFERENCES jobs(id),
    retry_of TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS job_retries_of ON job_retries(retry_of);
""",
    # 4: leases on provider jobs, and the instance that accepted each job.
    """-- The instance stepping a provider job, until when, and the generation of its claim
-- (every write of the holder checks it: a paused instance that lost the job writes nothing).
ALTER TABLE batches ADD COLUMN holder TEXT;
ALTER TABLE batches ADD COLUMN lease_until REAL;
ALTER TABLE batches ADD COLUMN lease_gen INTEGER NOT NULL DEFAULT 0;
-- The instance that accepted the job: its files are certainly readable there.
ALTER TABLE jobs ADD COLUMN instance TEXT;
-- One row per provider, locked by whoever creates a provider job: the count of unfinished
-- ones against max_concurrent_jobs holds across every instance sharing the journal.
CREATE TABLE provider_slots (provider TEXT PRIMARY KEY, created INTEGER NOT NULL DEFAULT 0);
""",
    # 5: a provider's own request to wait (a rate limit's Retry-After), for every instance.
    """-- Until when (seconds since the epoch, the journal's clock) no call goes to the provider.
ALTER TABLE provider_slots ADD COLUMN paused_until REAL;
""",
    # 6: stenod's own output files, so that a watched folder never takes one for an input.
    """-- Every file stenod wrote (path with its folder's symlinks resolved), with the size and
-- mtime it wrote; NULL while it is being written (recorded before the write).
CREATE TABLE own_outputs (
    path TEXT PRIMARY KEY,
    item_id TEXT NOT NULL,
    size INTEGER,
    mtime_ns INTEGER,
    recorded_at TEXT NOT NULL
);
CREATE INDEX own_outputs_item ON own_outputs(item_id);
""",
    # 7: who spoke, as the job asked (NULL: nobody asked).
    """-- The job's request to say who spoke (speaker counts, known speakers), JSON.
ALTER TABLE jobs ADD COLUMN diarization TEXT;
""",
    # 8: voices remembered: the voiceprints of speakers people named.
    """-- A voiceprint (an embedding, never audio: the model's name and its vector as JSON) kept
-- under the name a person gave the speaker, with the item it was learnt from; id: a digest
-- of the item and the voiceprint.
CREATE TABLE voices (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- the order they were kept in
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    model TEXT NOT NULL,
    vector TEXT NOT NULL,
    item_id TEXT NOT NULL,
    learnt_at TEXT NOT NULL
);
CREATE INDEX voices_name ON voices(name);
""",
)
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection, path: object) -> int:
    """Bring the journal to :data:`SCHEMA_VERSION`; returns the version it had. Raises
    SchemaTooNew for a journal from a newer stenod."""
    found = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if found > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"the journal {path} has schema version {found}, written by a newer stenod; this one knows "
            f"versions up to {SCHEMA_VERSION}. Run the newer stenod again, or point state_dir at another folder"
        )
    for version in range(found + 1, SCHEMA_VERSION + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(MIGRATIONS[version - 1]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    return found


def _statements(script: str) -> list[str]:
    """One migration's statements, for ``execute`` one by one inside our own transaction
    (``executescript`` would commit what came before it)."""
    parts: list[str] = []
    current: list[str] = []
    for line in script.splitlines():
        if line.strip().startswith("--"):
            continue
        current.append(line)
        if sqlite3.complete_statement("\n".join(current)):
            parts.append("\n".join(current).strip())
            current = []
    return parts
