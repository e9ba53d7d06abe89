"""The journal port's contract, run on SQLite and on PostgreSQL alike: whatever the
dispatcher, the sources and the HTTP server rely on holds on both."""

from __future__ import annotations

import asyncio
import json

from stenod.errors import ErrorInfo
from stenod.events import EventKind, JobEvent
from stenod.jobs import BatchState, ItemState, JobState
from stenod.journal import ItemOutcome, Journal, NewItem, NewJob, OutputFile


def output_file(path: str) -> OutputFile:
    """A file as the writers report one (these tests write none)."""
    return OutputFile(path, path, size=1, mtime_ns=1)


def new_job(request_id: str | None = None, inputs: int = 1, provider: str = "echo", **kw) -> NewJob:
    return NewJob(
        source="test",
        task="transcribe",
        provider=provider,
        request_id=request_id,
        items=[NewItem(input=f"/in/{n}.wav", name=f"{n}.wav", path=f"/in/{n}.wav", size=n) for n in range(inputs)],
        **kw,
    )


async def event_types(journal: Journal, job_id: str | None = None) -> list[str]:
    rows = await journal.outbox_batch(1000)
    return [json.loads(r.body)["type"] for r in rows if job_id is None or r.job_id == job_id]


# -- intake ----------------------------------------------------------------------------


async def test_a_repeated_request_id_returns_the_existing_job(journal):
    first, created = await journal.create_job(new_job("req-1"))
    again, created_again = await journal.create_job(new_job("req-1", inputs=3))
    assert created and not created_again
    assert again.job_id == first.job_id and len(again.items) == 1
    assert len(await journal.jobs()) == 1
    assert (await journal.job_by_request("req-1")).job_id == first.job_id
    assert await journal.job_by_request("req-other") is None


async def test_one_request_id_raced_by_two_instances_makes_one_job(open_journal):
    a, b = await open_journal(), await open_journal()
    results = await asyncio.gather(*(j.create_job(new_job(f"race-{n}")) for n in range(20) for j in (a, b)))
    created = [view.job_id for view, made in results if made]
    assert len(created) == 20  # each request_id once, whichever instance won
    for n in range(20):
        pair = [view.job_id for view, _ in results[2 * n : 2 * n + 2]]
        assert pair[0] == pair[1]
    assert len(await a.jobs(limit=100)) == 20


async def test_accepting_a_job_writes_its_event_in_the_same_commit(journal):
    view, _ = await journal.create_job(new_job("req-2"))
    (row,) = await journal.outbox_batch(10)
    assert (row.job_id, json.loads(row.body)["type"]) == (view.job_id, "stenod.job.accepted")
    assert [json.loads(body)["type"] for _, body in await journal.events(view.job_id)] == ["stenod.job.accepted"]


async def test_the_accepted_event_shows_the_job_exactly_as_the_journal_reads_it_back(journal):
    # create_job builds the accepted event's view without reading the rows back: it must match.
    reused = {"transcript": {"text": "earlier", "segments": []}}
    items = [
        NewItem(input="/in/ä b.wav", name="ä b.wav", path="/in/ä b.wav", size=3, device=2**40, inode=2**62),
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
    assert stored.items[1].state == ItemState.FETCHED and stored.items[1].transcript == reused["transcript"]


async def test_a_journal_without_outbox_keeps_the_history_but_no_events_to_publish(open_journal):
    journal = await open_journal(outbox=False)
    view, _ = await journal.create_job(new_job())
    await journal.add_event(JobEvent.new("stenod.job.rejected", "r-1", "echo", {}))  # type: ignore[arg-type]
    assert await journal.outbox_depth() == 0
    assert len(await journal.events(view.job_id)) == 1


async def test_concurrent_intake_loses_no_job(journal):
    results = await asyncio.gather(*(journal.create_job(new_job(f"r-{n}")) for n in range(300)))
    assert all(created for _, created in results)
    assert len({view.job_id for view, _ in results}) == 300
    assert len(await journal.jobs(limit=1000)) == 300


async def test_a_seen_file_is_known_by_inode_size_and_mtime(journal):
    await journal.create_job(new_job(seen=("rule", "/in/0.wav", 1, 2, 3, 4)))
    assert await journal.seen("rule", "/in/0.wav", 1, 2, 3, 4)
    assert not await journal.seen("rule", "/in/0.wav", 1, 2, 3, 5)  # changed since
    assert not await journal.seen("other", "/in/0.wav", 1, 2, 3, 4)
    await journal.record_seen("rule", "/in/0.wav", 1, 2, 3, 5)  # the newer version, ignored
    assert await journal.seen("rule", "/in/0.wav", 1, 2, 3, 5)
    await journal.forget_seen("rule", "/in/0.wav")
    assert not await journal.seen("rule", "/in/0.wav", 1, 2, 3, 5)


async def test_an_earlier_result_is_reused_only_for_the_same_request(journal):
    item = NewItem(input="/in/a.wav", name="a.wav", path="/in/a.wav", content_hash="h1")
    view, _ = await journal.create_job(NewJob(source="t", task="transcribe", provider="echo", items=[item]))
    result = {"transcript": {"text": "hi", "segments": []}}
    await journal.finish_items([ItemOutcome(view.items[0].item_id, ItemState.SUCCEEDED, result=result)])
    assert await journal.reusable_result("h1", "echo", "transcribe", None, (), {}) == result
    assert await journal.reusable_result("h1", "echo", "transcribe", "de", (), {}) is None
    assert await journal.reusable_result("h1", "echo", "transcribe", None, (), {"x": 1}) is None
    assert await journal.reusable_result("h2", "echo", "transcribe", None, (), {}) is None


# -- the dispatcher's steps ---------------------------------------------------------------


async def test_open_items_are_oldest_first_and_skip_providers_at_capacity_unless_cancelled(journal):
    a, _ = await journal.create_job(new_job(provider="echo"))
    b, _ = await journal.create_job(new_job(provider="slow", inputs=2))
    assert [i.job_id for i in await journal.open_items()] == [a.job_id, b.job_id, b.job_id]
    assert [i.job_id for i in await journal.open_items(skip_providers=["slow"])] == [a.job_id]
    await journal.request_cancel(b.job_id)
    assert len(await journal.open_items(skip_providers=["slow"])) == 3
    assert await journal.cancel_requested_jobs() == [b.job_id]
    assert len(await journal.open_items(limit=2)) == 2


async def test_an_item_goes_into_one_provider_job_only(open_journal):
    a, b = await open_journal(), await open_journal()
    view, _ = await a.create_job(new_job(inputs=6))
    ids = [i.item_id for i in view.items]
    first, second = await asyncio.gather(a.create_batch("echo", ids, next_at=0), b.create_batch("echo", ids, next_at=0))
    made = [batch for batch in (first, second) if batch is not None]  # None: the other took every item
    claimed = [i.item_id for batch in made for i in batch.items]
    assert sorted(claimed) == sorted(ids)  # each item in exactly one of the two
    assert all(batch.items for batch in made)  # no provider job without items
    assert len(await a.active_batches()) == len(made)
    assert await a.open_items() == []


async def test_a_provider_job_from_submission_to_outcome(journal):
    view, _ = await journal.create_job(new_job(inputs=2))
    batch = await journal.create_batch("echo", [i.item_id for i in view.items], next_at=5.0)
    assert batch.state == BatchState.SUBMITTING and len(batch.items) == 2
    await journal.save_checkpoint(batch.batch_id, {"uploaded": ["0.wav"]})
    assert (await journal.batch(batch.batch_id)).checkpoint == {"uploaded": ["0.wav"]}
    await journal.batch_submitted(batch.batch_id, {"remote": "job-1"}, next_at=7.5)
    polled = await journal.batch(batch.batch_id)
    assert (polled.state, polled.handle, polled.next_at) == (BatchState.POLLING, {"remote": "job-1"}, 7.5)
    assert (await journal.job(view.job_id)).state == JobState.SUBMITTED
    changed = await journal.batch_polled(batch.batch_id, running=True, progress=0.4, next_at=9.0, poll_time=8.0)
    assert changed == [view.job_id]
    assert await journal.batch_polled(batch.batch_id, running=True, progress=0.3, next_at=9.0, poll_time=8.5) == []
    running = await journal.job(view.job_id)
    assert running.state == JobState.RUNNING and running.progress == 0.4
    await journal.batch_retry(batch.batch_id, attempts=2, next_at=20.0, error=ErrorInfo("timeout", "slow"))
    assert (await journal.batch(batch.batch_id)).attempts == 2
    await journal.batch_state(batch.batch_id, BatchState.FETCHING)
    assert [b.batch_id for b in await journal.active_batches()] == [batch.batch_id]
    outcomes = [
        ItemOutcome(
            i.item_id,
            ItemState.SUCCEEDED,
            outputs=[output_file(f"/out/{n}.txt")],
            result={"transcript": {"text": "ok"}},
        )
        for n, i in enumerate(view.items)
    ]
    await journal.finish_items(outcomes, batch_id=batch.batch_id, batch_state=BatchState.DONE)
    done = await journal.job(view.job_id)
    assert done.state == JobState.SUCCEEDED and done.progress == 1.0
    assert [i.outputs for i in done.items] == [("/out/0.txt",), ("/out/1.txt",)]
    assert await journal.active_batches() == []
    assert await event_types(journal, view.job_id) == [
        "stenod.job.accepted",
        "stenod.job.submitted",
        "stenod.job.progress",
        "stenod.job.succeeded",
    ]


async def test_released_items_go_back_to_the_queue(journal):
    view, _ = await journal.create_job(new_job(inputs=2))
    batch = await journal.create_batch("echo", [i.item_id for i in view.items], next_at=0)
    await journal.release_items(batch.batch_id, [view.items[1].item_id])
    assert [i.item_id for i in await journal.open_items()] == [view.items[1].item_id]


async def test_a_downloaded_input_gets_its_file(journal):
    view, _ = await journal.create_job(
        NewJob(source="t", task="transcribe", provider="echo", items=[NewItem(input="https://x/a.mp3", name="a.mp3")])
    )
    await journal.attach_download(view.items[0].item_id, "/dl/a.mp3", 10, 1, 2**50)
    (item,) = await journal.open_items()
    assert (item.path, item.size, item.device, item.inode) == ("/dl/a.mp3", 10, 1, 2**50)


async def test_a_follow_up_step_joins_the_same_job(journal):
    view, _ = await journal.create_job(new_job())
    follow = NewItem(input="/out/0.txt", name="0.txt", path="/out/0.txt", task="translate", target_languages=["de"])
    await journal.finish_items([ItemOutcome(view.items[0].item_id, ItemState.SUCCEEDED, follow_up=follow)])
    job = await journal.job(view.job_id)
    assert len(job.items) == 2 and job.items[1].index == 1 and job.state == JobState.RUNNING
    (open_,) = await journal.open_items()
    assert (open_.task, open_.target_languages) == ("translate", ("de",))


async def test_job_state_follows_its_items_and_terminal_events_carry_the_transcript(journal):
    view, _ = await journal.create_job(new_job("r", inputs=2, reply_to="replies", correlation_id="c-1"))
    a, b = view.items
    result = {"transcript": {"text": "hi", "segments": []}}
    await journal.finish_items(
        [ItemOutcome(a.item_id, ItemState.SUCCEEDED, outputs=[output_file("/in/0.txt")], result=result)]
    )
    assert (await journal.job(view.job_id)).state == JobState.RUNNING
    await journal.finish_items([ItemOutcome(b.item_id, ItemState.FAILED, error=ErrorInfo("not_audio", "no"))])
    done = await journal.job(view.job_id)
    assert done.state == JobState.PARTIAL and done.progress == 1.0
    assert await event_types(journal) == [
        "stenod.job.accepted",
        "stenod.job.submitted",
        "stenod.job.progress",
        "stenod.job.partial",
    ]
    last = (await journal.outbox_batch(10))[-1]
    assert (last.reply_to, last.correlation_id) == ("replies", "c-1")  # the terminal event answers the request
    body = json.loads(last.body)
    assert body["data"]["items"][0]["transcript"]["text"] == "hi"
    assert body["subject"] == view.job_id and body["specversion"] == "1.0"


async def test_a_failed_job_carries_its_items_error(journal):
    view, _ = await journal.create_job(new_job(inputs=2))
    await journal.finish_items(
        [
            ItemOutcome(i.item_id, ItemState.FAILED, error=ErrorInfo("not_audio", f"no {n}"))
            for n, i in enumerate(view.items)
        ]
    )
    failed = await journal.job(view.job_id)
    assert failed.state == JobState.FAILED and failed.error.code == "not_audio"


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


async def test_progress_only_rises_and_makes_an_event_when_asked(journal):
    view, _ = await journal.create_job(new_job())
    batch = await journal.create_batch("echo", [view.items[0].item_id], next_at=0)
    await journal.batch_submitted(batch.batch_id, {}, next_at=0)
    await journal.set_progress([view.job_id], 0.5)
    await journal.set_progress([view.job_id], 0.2)
    assert (await journal.job(view.job_id)).progress == 0.5
    await journal.emit_progress(view.job_id)
    assert (await event_types(journal))[-1] == "stenod.job.progress"


# -- cancel, corrections, retries ------------------------------------------------------


async def test_a_cancelled_job_ends_cancelled(journal):
    view, _ = await journal.create_job(new_job())
    assert (await journal.request_cancel(view.job_id)).job_id == view.job_id
    await journal.finish_items([ItemOutcome(view.items[0].item_id, ItemState.CANCELLED)])
    assert (await journal.job(view.job_id)).state == JobState.CANCELLED
    assert await journal.cancel_requested_jobs() == []
    assert await journal.request_cancel("no-such-job") is None


async def test_a_correction_replaces_the_transcript_until_it_is_reverted(journal):
    view, _ = await journal.create_job(new_job())
    item = view.items[0].item_id
    await journal.finish_items(
        [
            ItemOutcome(
                item, ItemState.SUCCEEDED, outputs=[output_file("/o.txt")], result={"transcript": {"text": "engine"}}
            )
        ]
    )
    await journal.save_edit(item, {"text": "person"})
    await journal.save_edit(item, {"text": "person, again"})
    editable = await journal.editable_item(view.job_id, 0)
    assert (editable.original, editable.edited, editable.outputs) == (
        {"text": "engine"},
        {"text": "person, again"},
        ("/o.txt",),
    )
    assert (await journal.job(view.job_id)).items[0].transcript == {"text": "person, again"}
    await journal.save_edit(item, None)
    assert (await journal.job(view.job_id)).items[0].transcript == {"text": "engine"}
    assert await journal.editable_item(view.job_id, 5) is None


async def test_a_retry_repeats_the_request_and_is_linked_both_ways(journal):
    first, _ = await journal.create_job(new_job(inputs=2, language="it", options={"beam": 5}))
    again = await journal.repeat_of(first.job_id)
    assert [i.input for i in again.items] == ["/in/0.wav", "/in/1.wav"]
    assert (again.language, again.options, again.retry_of) == ("it", {"beam": 5}, first.job_id)
    second, _ = await journal.create_job(again)
    assert await journal.retry_links(second.job_id) == (first.job_id, [])
    assert await journal.retry_links(first.job_id) == (None, [second.job_id])
    assert await journal.repeat_of("no-such-job") is None


# -- reads --------------------------------------------------------------------------------


async def test_jobs_are_listed_newest_first_filtered_and_paged(journal):
    ids = []
    for n in range(5):
        view, _ = await journal.create_job(new_job(provider="echo" if n % 2 else "other"))
        ids.append(view.job_id)
    assert [v.job_id for v in await journal.jobs()] == ids[::-1]
    assert [v.job_id for v in await journal.jobs(limit=2, before=ids[3])] == [ids[2], ids[1]]
    assert [v.job_id for v in await journal.jobs(provider="echo")] == [ids[3], ids[1]]
    assert [v.job_id for v in await journal.jobs(state="succeeded")] == []
    assert await journal.counts() == {"echo": {"accepted": 2}, "other": {"accepted": 3}}


async def test_events_are_read_in_order_from_a_known_one(journal):
    view, _ = await journal.create_job(new_job())
    await journal.emit_for_existing(view.job_id)
    await journal.finish_items([ItemOutcome(view.items[0].item_id, ItemState.SUCCEEDED)])
    events = await journal.events(view.job_id)
    kinds = [json.loads(body)["type"] for _, body in events]
    assert kinds == ["stenod.job.accepted", "stenod.job.accepted", "stenod.job.succeeded"]
    seqs = [seq for seq, _ in events]
    assert seqs == sorted(seqs)
    second_id = json.loads(events[1][1])["id"]
    assert await journal.event_seq(view.job_id, second_id) == seqs[1]
    assert [seq for seq, _ in await journal.events(view.job_id, after=seqs[1])] == [seqs[2]]
    assert await journal.event_seq(view.job_id, "no-such-event") is None


async def test_live_paths_are_the_unfinished_inputs_under_a_prefix(journal):
    spool = "/spool/50%_a/"  # LIKE's wildcards must mean nothing here
    items = [NewItem(input=p, name="x", path=p) for p in (spool + "1.wav", "/spool/50%Xa/2.wav", spool + "3.wav")]
    view, _ = await journal.create_job(NewJob(source="t", task="transcribe", provider="echo", items=items))
    await journal.finish_items([ItemOutcome(view.items[2].item_id, ItemState.SUCCEEDED)])
    assert await journal.live_paths(spool) == {spool + "1.wav"}


async def test_the_outbox_is_drained_by_sequence(journal):
    views = [(await journal.create_job(new_job()))[0] for _ in range(3)]
    await journal.add_event(JobEvent.new(EventKind.REJECTED, "r-1", "echo", {"x": 1}), reply_to="q", correlation_id="c")
    rows = await journal.outbox_batch(10)
    assert [r.job_id for r in rows] == [v.job_id for v in views] + ["r-1"]
    assert (rows[-1].reply_to, rows[-1].correlation_id) == ("q", "c")
    assert await journal.outbox_depth() == 4
    await journal.outbox_delete([rows[0].seq, rows[2].seq])
    assert [r.seq for r in await journal.outbox_batch(10)] == [rows[1].seq, rows[3].seq]
    assert await journal.outbox_depth() == 2


async def test_the_journal_answers_a_ping_and_tells_watchers_what_changed(journal):
    changed: list[set[str]] = []
    journal.on_change = changed.append
    journal.outbox_ready.clear()
    view, _ = await journal.create_job(new_job())
    assert await journal.ping()
    assert changed == [{view.job_id}] and journal.outbox_ready.is_set()


async def test_a_job_whose_last_two_items_finish_at_the_same_moment_ends(journal):
    # Found by the cluster chaos run: two provider jobs of one job finished 32 ms apart on
    # PostgreSQL, each transaction saw the other's item still open, and the job stayed
    # running for good. Each item here is finished on its own connection, all at once.
    def two_files(n: int) -> NewJob:
        items = [NewItem(input=f"/in/{n}-{k}.wav", name=f"{n}-{k}.wav", path=f"/in/{n}-{k}.wav") for k in (0, 1)]
        return NewJob(source="test", task="transcribe", provider="echo", items=items)

    jobs = [(await journal.create_job(two_files(n)))[0] for n in range(20)]
    await asyncio.gather(
        *(
            journal.finish_items(
                [
                    ItemOutcome(job.items[0].item_id, ItemState.SUCCEEDED)
                    if k == 0
                    else ItemOutcome(job.items[1].item_id, ItemState.FAILED, error=ErrorInfo("bad", "refused"))
                ]
            )
            for job in jobs
            for k in (0, 1)
        )
    )
    assert {(await journal.job(job.job_id)).state for job in jobs} == {JobState.PARTIAL}
    for job in jobs:
        assert (await event_types(journal, job.job_id)).count("stenod.job.partial") == 1
