"""The SQLite journal: idempotent intake, outbox in the same transaction, group commit."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from stenod.adapters.sqlite.journal import SqliteJournal
from stenod.adapters.sqlite.store import JournalError
from stenod.errors import ErrorInfo
from stenod.jobs import ItemState, JobState
from stenod.journal import ItemOutcome, NewItem, NewJob


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


def outbox_types(path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT job_id, body FROM outbox ORDER BY seq").fetchall()
    return [(job_id, json.loads(body)["type"]) for job_id, body in rows]


async def test_a_repeated_request_id_returns_the_existing_job(journal):
    first, created = await journal.create_job(new_job("req-1"))
    again, created_again = await journal.create_job(new_job("req-1", inputs=3))
    assert created and not created_again
    assert again.job_id == first.job_id and len(again.items) == 1
    assert len(await journal.jobs()) == 1


async def test_accepting_a_job_writes_its_event_in_the_same_commit(journal, tmp_path):
    view, _ = await journal.create_job(new_job("req-2"))
    assert outbox_types(tmp_path / "journal.db") == [(view.job_id, "stenod.job.accepted")]


async def test_the_accepted_event_shows_the_job_exactly_as_the_journal_reads_it_back(journal):
    # create_job builds the accepted event's view without reading the rows back: it must match.
    reused = {"transcript": {"text": "earlier", "segments": []}}
    items = [
        NewItem(input="/in/a.wav", name="a.wav", path="/in/a.wav", size=3),
        NewItem(input="https://example.org/b.mp3?sig=x", name="b.mp3", reused_result=reused),
    ]
    view, _ = await journal.create_job(
        NewJob(
            source="amqp",
            task="translate",
            provider="echo",
            items=items,
            language="de",
            target_languages=("en", "fr"),
            request_id="req-v",
            reply_to="q",
            correlation_id="c",
        )
    )
    (row,) = await journal.outbox_batch(10)
    stored = await journal.job(view.job_id)
    assert view == stored
    assert json.loads(row.body)["data"] == stored.to_data()


async def test_journal_without_outbox_keeps_no_events(tmp_path):
    j = SqliteJournal.open(tmp_path / "quiet.db", outbox=False)
    try:
        await j.create_job(new_job())
        assert await j.outbox_depth() == 0
    finally:
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


async def test_job_state_follows_its_items_and_terminal_events_carry_the_transcript(journal, tmp_path):
    view, _ = await journal.create_job(new_job("r", inputs=2))
    a, b = view.items
    await journal.finish_items(
        [
            ItemOutcome(
                a.item_id,
                ItemState.SUCCEEDED,
                outputs=["/in/0.txt"],
                result={"transcript": {"text": "hi", "segments": []}},
            )
        ]
    )
    assert (await journal.job(view.job_id)).state == JobState.RUNNING
    await journal.finish_items([ItemOutcome(b.item_id, ItemState.FAILED, error=ErrorInfo("not_audio", "no"))])
    done = await journal.job(view.job_id)
    assert done.state == JobState.PARTIAL and done.progress == 1.0
    types = [t for _, t in outbox_types(tmp_path / "journal.db")]
    assert types == ["stenod.job.accepted", "stenod.job.submitted", "stenod.job.progress", "stenod.job.partial"]
    with sqlite3.connect(tmp_path / "journal.db") as conn:
        last = json.loads(conn.execute("SELECT body FROM outbox ORDER BY seq DESC LIMIT 1").fetchone()[0])
    assert last["data"]["items"][0]["transcript"]["text"] == "hi"
    assert last["subject"] == view.job_id and last["specversion"] == "1.0"


async def test_a_terminal_job_never_changes_again(journal):
    view, _ = await journal.create_job(new_job())
    item = view.items[0].item_id
    await journal.finish_items([ItemOutcome(item, ItemState.FAILED, error=ErrorInfo("x", "y"))])
    await journal.finish_items([ItemOutcome(item, ItemState.SUCCEEDED)])
    assert (await journal.job(view.job_id)).state == JobState.FAILED


async def test_cost_of_items_is_summed_on_the_job(journal):
    view, _ = await journal.create_job(new_job(inputs=2))
    await journal.finish_items(
        [ItemOutcome(i.item_id, ItemState.SUCCEEDED, cost={"amount": 0.25, "currency": "USD"}) for i in view.items]
    )
    assert (await journal.job(view.job_id)).cost == {"amount": 0.5, "currency": "USD"}


def test_a_corrupt_journal_is_refused_at_start(tmp_path):
    path = tmp_path / "journal.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(JournalError, match="cannot be opened"):
        SqliteJournal.open(path)
