"""Results nobody fetched, on both journals: finished HTTP jobs older than the keep time
are found oldest first, and a job's rows are forgotten only once it is finished and its
events are out."""

from __future__ import annotations

import asyncio

from stenod.errors import ErrorInfo
from stenod.events import utc_now
from stenod.jobs import ItemState
from stenod.journal import ItemOutcome, Journal, NewItem, NewJob, OutputFile
from stenod.output_spec import OutputSpec


async def _job(journal: Journal, *, source: str = "http", finish: bool = True, name: str = "a.wav") -> str:
    item = NewItem(input=name, name=name, path=f"/state/spool/x/{name}", size=1)
    view, _ = await journal.create_job(
        NewJob(
            source=source,
            task="transcribe",
            provider="echo",
            items=[item],
            output=OutputSpec(dir=f"/state/results/{name}"),
        )
    )
    if finish:
        await journal.finish_items([ItemOutcome(view.items[0].item_id, ItemState.FAILED, error=ErrorInfo("x", "y"))])
    return view.job_id


async def test_finished_http_jobs_before_a_time_are_found_oldest_first_with_their_folder(journal: Journal) -> None:
    first = await _job(journal, name="one.wav")
    second = await _job(journal, name="two.wav")
    await asyncio.sleep(0.01)
    await _job(journal, finish=False, name="running.wav")
    await _job(journal, source="folder", name="folder.wav")
    cutoff = utc_now()
    await asyncio.sleep(0.01)
    await _job(journal, name="late.wav")  # ended after the cutoff
    found = await journal.finished_http_jobs(cutoff)
    assert [(f.job_id, f.output_dir) for f in found] == [
        (first, "/state/results/one.wav"),
        (second, "/state/results/two.wav"),
    ]
    assert [f.job_id for f in await journal.finished_http_jobs(cutoff, after=first)] == [second]


async def test_a_forgotten_job_leaves_no_row_and_others_keep_theirs(journal: Journal) -> None:
    old, kept = await _job(journal, name="old.wav"), await _job(journal, name="kept.wav")
    await journal.outbox_delete([r.seq for r in await journal.outbox_batch(1000)])
    assert await journal.forget_job(old)
    assert await journal.job(old) is None and await journal.events(old) == []
    assert (await journal.job(kept)) is not None and await journal.events(kept)
    assert not await journal.forget_job(old)  # gone already: nothing to do


async def test_an_unfinished_job_or_one_whose_events_wait_for_the_broker_is_not_forgotten(journal: Journal) -> None:
    running = await _job(journal, finish=False, name="running.wav")
    assert not await journal.forget_job(running)
    finished = await _job(journal, name="done.wav")
    assert not await journal.forget_job(finished)  # its events are still in the outbox
    await journal.outbox_delete([r.seq for r in await journal.outbox_batch(1000)])
    assert await journal.forget_job(finished) and await journal.job(running) is not None


async def test_a_forgotten_job_takes_the_record_of_its_files_with_it(journal: Journal) -> None:
    view, _ = await journal.create_job(
        NewJob(source="http", task="transcribe", provider="echo", items=[NewItem(input="a.wav", name="a.wav")])
    )
    txt = OutputFile("/state/results/a.txt", "/state/results/a.txt", size=3, mtime_ns=1)
    await journal.finish_items([ItemOutcome(view.items[0].item_id, ItemState.SUCCEEDED, outputs=[txt])])
    await journal.outbox_delete([r.seq for r in await journal.outbox_batch(1000)])
    assert await journal.own_output(txt.key) is not None
    assert await journal.forget_job(view.job_id)
    assert await journal.own_output(txt.key) is None
