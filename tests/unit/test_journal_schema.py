"""The journal's schema versions: a journal from before versioning, or from an older
release, is brought up to date keeping its jobs; one from a newer stenod is refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from stenod.adapters.sqlite.journal import SqliteJournal
from stenod.adapters.sqlite.schema import MIGRATIONS, SCHEMA_VERSION
from stenod.errors import ConfigError, SchemaTooNew


def old_journal(path: Path, versions: int) -> None:
    """A journal as an older release left it: its first ``versions`` steps, user_version 0
    (before versioning there was none), one job in it."""
    conn = sqlite3.connect(path)
    for script in MIGRATIONS[:versions]:
        conn.executescript(script)
    conn.execute(
        "INSERT INTO jobs (id, source, task, provider, state, created_at, updated_at) "
        "VALUES ('01OLDJOB', 'folder', 'transcribe', 'whisper', 'succeeded', '2026-01-01T00:00:00Z', "
        "'2026-01-01T00:00:00Z')"
    )
    conn.commit()
    conn.close()


async def test_a_journal_from_before_versioning_is_brought_up_to_date(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    old_journal(path, 1)
    journal = SqliteJournal.open(path)
    try:
        view = await journal.job("01OLDJOB")
        assert view is not None and await journal.events("01OLDJOB") == []
    finally:
        journal.close()
    conn = sqlite3.connect(path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert {"job_events", "item_edits", "job_retries"} <= tables
    conn.close()


async def test_reopening_a_current_journal_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    SqliteJournal.open(path).close()
    SqliteJournal.open(path).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def test_a_journal_from_a_newer_stenod_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaTooNew) as info:
        SqliteJournal.open(path)
    assert isinstance(info.value, ConfigError) and "newer stenod" in str(info.value)
