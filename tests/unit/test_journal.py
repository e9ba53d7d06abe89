"""What only the SQLite journal does: group commit on one writer thread, the integrity check.
Everything both journals promise is in tests/contract."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from stenod.adapters.sqlite.journal import SqliteJournal
from stenod.errors import JournalError
from stenod.journal import NewItem, NewJob


def new_job(request_id: str | None = None, inputs: int = 1, **kw) -> NewJob:
    return NewJob(
        source="test",
        task="transcribe",
        provider="echo",
        request_id=request_id,
        items=[NewItem(input=f"/in/{n}.wav", name=f"{n}.wav", path=f"/in/{n}.wav") for n in range(inputs)],
        **kw,
    )


@pytest.fixture
async def journal(tmp_path: Path):
    j = SqliteJournal.open(tmp_path / "journal.db", outbox=True)
    yield j
    j.close()


async def test_concurrent_intake_is_group_committed_without_losing_a_job(journal):
    results = await asyncio.gather(*(journal.create_job(new_job(f"r-{n}")) for n in range(300)))
    assert all(created for _, created in results)
    assert len({view.job_id for view, _ in results}) == 300
    assert len(await journal.jobs(limit=1000)) == 300


async def test_a_failing_operation_does_not_undo_others_committed_with_it(journal):
    def broken(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO jobs (id, source, task, provider, state, created_at, updated_at) "
            "VALUES ('half-written', 't', 'transcribe', 'echo', 'accepted', 'now', 'now')"
        )
        raise RuntimeError("boom")

    outcome = await asyncio.gather(
        journal._writer.call(broken), journal.create_job(new_job("ok")), return_exceptions=True
    )
    assert isinstance(outcome[0], RuntimeError)
    assert await journal.job_by_request("ok") is not None
    assert await journal.job("half-written") is None


def test_a_corrupt_journal_is_refused_at_start(tmp_path):
    path = tmp_path / "journal.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(JournalError, match="cannot be opened"):
        SqliteJournal.open(path)
