"""The journal's tables on PostgreSQL, versioned in ``stenod_schema``.

The same tables as on SQLite (the operations in :mod:`stenod.adapters.sql` run on both),
with PostgreSQL's types: identifiers and paths in the "C" collation so that they sort by
byte as on SQLite (ULIDs page by ``id <``), epoch seconds as ``double precision``,
device and inode numbers as ``bigint``. Migrations run at start-up under an advisory
lock, so that instances starting together apply each one once.
"""

from __future__ import annotations

from psycopg import AsyncConnection

from stenod.errors import SchemaTooNew

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate"]

_LOCK = 0x5733_0D00_0000_0001  # pg_advisory_xact_lock key: "stenod schema"

MIGRATIONS: tuple[str, ...] = (
    # 1: the schema of SQLite's version 3: jobs, items, provider jobs, seen files, the
    # outbox, every job's events, corrections, retries.
    """
CREATE TABLE jobs (
    id TEXT COLLATE "C" PRIMARY KEY,
    request_id TEXT UNIQUE,
    source TEXT NOT NULL,
    task TEXT NOT NULL,
    provider TEXT NOT NULL,
    language TEXT,
    target_languages TEXT NOT NULL DEFAULT '[]',
    options TEXT NOT NULL DEFAULT '{}',
    output TEXT NOT NULL DEFAULT '{}',
    state TEXT NOT NULL,
    progress DOUBLE PRECISION NOT NULL DEFAULT 0,
    error TEXT,
    cost TEXT,
    reply_to TEXT,
    correlation_id TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX jobs_state ON jobs(state);
CREATE TABLE items (
    id TEXT COLLATE "C" PRIMARY KEY,
    job_id TEXT COLLATE "C" NOT NULL REFERENCES jobs(id),
    idx INTEGER NOT NULL,
    input TEXT NOT NULL,
    path TEXT COLLATE "C",
    name TEXT NOT NULL,
    size BIGINT,
    device BIGINT,
    inode BIGINT,
    content_hash TEXT,
    state TEXT NOT NULL,
    batch_id TEXT COLLATE "C",
    task TEXT,
    provider TEXT,
    target_languages TEXT,
    options TEXT,
    outputs TEXT NOT NULL DEFAULT '[]',
    error TEXT,
    result TEXT,
    cost TEXT,
    updated_at TEXT NOT NULL
);
CREATE INDEX items_job ON items(job_id);
CREATE INDEX items_open ON items(state, batch_id) WHERE state IN ('pending', 'fetched');
CREATE INDEX items_batch ON items(batch_id) WHERE batch_id IS NOT NULL;
CREATE INDEX items_hash ON items(content_hash) WHERE content_hash IS NOT NULL;
CREATE TABLE batches (
    id TEXT COLLATE "C" PRIMARY KEY,
    provider TEXT NOT NULL,
    state TEXT NOT NULL,
    handle TEXT,
    checkpoint TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at DOUBLE PRECISION NOT NULL,
    last_poll_at DOUBLE PRECISION,
    error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX batches_active ON batches(state) WHERE state NOT IN ('done', 'failed');
CREATE TABLE seen_files (
    rule TEXT NOT NULL,
    path TEXT COLLATE "C" NOT NULL,
    device BIGINT NOT NULL,
    inode BIGINT NOT NULL,
    size BIGINT NOT NULL,
    mtime_ns BIGINT NOT NULL,
    job_id TEXT COLLATE "C",
    PRIMARY KEY (rule, path)
);
CREATE TABLE outbox (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id TEXT NOT NULL,
    job_id TEXT COLLATE "C" NOT NULL,
    routing_key TEXT NOT NULL,
    body TEXT NOT NULL,
    reply_to TEXT,
    correlation_id TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE job_events (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id TEXT NOT NULL,
    job_id TEXT COLLATE "C" NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX job_events_job ON job_events(job_id, seq);
CREATE INDEX job_events_id ON job_events(event_id);
CREATE TABLE item_edits (
    item_id TEXT COLLATE "C" PRIMARY KEY REFERENCES items(id),
    transcript TEXT NOT NULL,
    edited_at TEXT NOT NULL
);
CREATE TABLE job_retries (
    job_id TEXT COLLATE "C" PRIMARY KEY REFERENCES jobs(id),
    retry_of TEXT COLLATE "C" NOT NULL
);
CREATE INDEX job_retries_of ON job_retries(retry_of);
""",
    # 2: leases on provider jobs (SQLite's version 4), and the instance that accepted each job.
    """
ALTER TABLE batches ADD COLUMN holder TEXT;
ALTER TABLE batches ADD COLUMN lease_until DOUBLE PRECISION;
ALTER TABLE batches ADD COLUMN lease_gen INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN instance TEXT;
CREATE TABLE provider_slots (provider TEXT PRIMARY KEY, created INTEGER NOT NULL DEFAULT 0);
""",
    # 3: a provider's own request to wait (a rate limit's Retry-After; SQLite's version 5).
    """
ALTER TABLE provider_slots ADD COLUMN paused_until DOUBLE PRECISION;
""",
    # 4: stenod's own output files (SQLite's version 6).
    """
CREATE TABLE own_outputs (
    path TEXT COLLATE "C" PRIMARY KEY,
    item_id TEXT COLLATE "C" NOT NULL,
    size BIGINT,
    mtime_ns BIGINT,
    recorded_at TEXT NOT NULL
);
CREATE INDEX own_outputs_item ON own_outputs(item_id);
""",
    # 5: who spoke, as the job asked (SQLite's version 7).
    """
ALTER TABLE jobs ADD COLUMN diarization TEXT;
""",
    # 6: voices remembered (SQLite's version 8).
    """
CREATE TABLE voices (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- the order they were kept in
    id TEXT COLLATE "C" NOT NULL UNIQUE,
    name TEXT NOT NULL,
    model TEXT NOT NULL,
    vector TEXT NOT NULL,
    item_id TEXT COLLATE "C" NOT NULL,
    learnt_at TEXT NOT NULL
);
CREATE INDEX voices_name ON voices(name);
""",
)
SCHEMA_VERSION = len(MIGRATIONS)


async def migrate(conn: AsyncConnection, where: str) -> int:
    """Bring the database to :data:`SCHEMA_VERSION`; returns the version it had. Raises
    SchemaTooNew for a database from a newer stenod. ``where`` names it in messages."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
        await conn.execute("CREATE TABLE IF NOT EXISTS stenod_schema (version INTEGER NOT NULL)")
        cur = await conn.execute("SELECT version FROM stenod_schema")
        row = await cur.fetchone()
        found = int(row[0]) if row else 0
        if found > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"the journal {where} has schema version {found}, written by a newer stenod; this one knows "
                f"versions up to {SCHEMA_VERSION}. Run the newer stenod again, or point [journal] url at another "
                "database"
            )
        for version in range(found + 1, SCHEMA_VERSION + 1):
            await conn.execute(MIGRATIONS[version - 1].encode())  # several statements: the simple query protocol
        if found == 0:
            await conn.execute("INSERT INTO stenod_schema (version) VALUES (%s)", (SCHEMA_VERSION,))
        elif found < SCHEMA_VERSION:
            await conn.execute("UPDATE stenod_schema SET version = %s", (SCHEMA_VERSION,))
    return found
