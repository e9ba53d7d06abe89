"""A job recorded already finished (a voice command kept from the Wyoming listener), on both
journals: read back as any succeeded job, its one event the succeeded one (in the history
and the outbox), found and forgotten by the results retention."""

from __future__ import annotations

import asyncio
import json

from stenod.events import utc_now
from stenod.jobs import ItemState, JobState
from stenod.journal import Journal, NewItem, NewJob

TRANSCRIPT = {"text": "turn on the kitchen light", "language": "en", "duration": 1.8, "segments": []}


def _command(provider: str = "whisper") -> NewJob:
    item = NewItem(input="voice command from 10.0.0.7", name="voice-command", result={"transcript": TRANSCRIPT})
    return NewJob(source="wyoming", task="transcribe", provider=provider, items=[item], language="en")


async def test_a_finished_job_reads_back_succeeded_with_its_transcript(journal: Journal) -> None:
    recorded = await journal.record_finished_job(_command())
    view = await journal.job(recorded.job_id)
    assert view is not None and view == recorded
    assert (view.state, view.progress, view.source, view.language) == (JobState.SUCCEEDED, 1.0, "wyoming", "en")
    [item] = view.items
    assert (item.state, item.transcript, item.outputs, item.input) == (
        ItemState.SUCCEEDED,
        TRANSCRIPT,
        (),
        "voice command from 10.0.0.7",
    )
    assert [j.job_id for j in await journal.jobs(state="succeeded")] == [recorded.job_id]


async def test_its_only_event_is_succeeded_in_the_history_and_the_outbox(journal: Journal) -> None:
    recorded = await journal.record_finished_job(_command())
    history = [json.loads(body) for _, body in await journal.events(recorded.job_id)]
    [outbox] = await journal.outbox_batch(100)
    assert [e["type"] for e in history] == ["stenod.job.succeeded"]
    assert outbox.routing_key == "job.succeeded.whisper" and outbox.event_id == history[0]["id"]
    assert history[0]["data"]["items"][0]["transcript"]["text"] == TRANSCRIPT["text"]


async def test_it_touches_no_open_work(journal: Journal) -> None:
    await journal.record_finished_job(_command())
    assert await journal.open_items() == []
    assert await journal.counts() == {"whisper": {"succeeded": 1}}


async def test_the_results_retention_finds_it_without_a_folder_and_forgets_it(journal: Journal) -> None:
    recorded = await journal.record_finished_job(_command())
    await asyncio.sleep(0.01)
    [found] = await journal.finished_http_jobs(utc_now())
    assert (found.job_id, found.output_dir, found.source) == (recorded.job_id, None, "wyoming")
    await journal.outbox_delete([r.seq for r in await journal.outbox_batch(100)])
    assert await journal.forget_job(recorded.job_id)
    assert await journal.job(recorded.job_id) is None and await journal.events(recorded.job_id) == []
