"""Leases on provider jobs, on SQLite and PostgreSQL alike: who steps which provider job,
how a dead holder's jobs are taken over, and the fence that keeps a holder that lost its
job from writing anything about it. Each journal opened here is one instance."""

from __future__ import annotations

import asyncio
import time

import pytest

from stenod.errors import ErrorInfo, LeaseLost
from stenod.jobs import BatchState, ItemState, JobState
from stenod.journal import ItemOutcome, Journal, NewItem, NewJob, OutputFile
from tests.contract.test_journal_contract import event_types, new_job


def output_file(path: str) -> OutputFile:
    """A file as the writers report one (these tests write none)."""
    return OutputFile(path, path, size=1, mtime_ns=1)


LEASE = 1.0


async def instances(open_journal, *names: str, lease: float = LEASE) -> list[Journal]:
    return [await open_journal(instance_id=name, lease_seconds=lease) for name in names]


async def packed(journal: Journal, provider: str = "echo"):
    view, _ = await journal.create_job(new_job(provider=provider))
    batch = await journal.create_batch(provider, [view.items[0].item_id], next_at=0.0)
    return view, batch


async def test_a_new_provider_job_is_held_by_its_creator_and_not_claimable_by_others(open_journal):
    a, b = await instances(open_journal, "a", "b")
    _, batch = await packed(a)
    assert (batch.holder, batch.lease_gen) == ("a", 1)
    assert batch.lease_until > time.time()
    assert await b.claim_batches(["echo"]) == []
    await a.batch_submitted(batch.batch_id, {"id": "remote-1"}, next_at=0.0)  # the holder writes
    assert await a.renew_leases() == []


async def test_an_expired_lease_is_taken_over_and_the_old_holder_is_fenced(open_journal):
    a, b = await instances(open_journal, "a", "b")
    view, batch = await packed(a)
    await a.save_checkpoint(batch.batch_id, {"remote": "created"})
    await asyncio.sleep(LEASE + 0.3)
    (taken,) = await b.claim_batches(["echo"])
    assert (taken.batch_id, taken.holder, taken.lease_gen) == (batch.batch_id, "b", 2)
    assert taken.checkpoint == {"remote": "created"}  # it continues from where a stopped
    assert [i.item_id for i in taken.items] == [view.items[0].item_id]
    events_before = await event_types(a)

    # a wakes up: every write about the job is refused, and nothing of it is committed
    with pytest.raises(LeaseLost):
        await a.batch_submitted(batch.batch_id, {"id": "remote-2"}, next_at=0.0)
    with pytest.raises(LeaseLost):
        await a.save_checkpoint(batch.batch_id, {"remote": "overwritten"})
    with pytest.raises(LeaseLost):
        await a.finish_items(
            [ItemOutcome(view.items[0].item_id, ItemState.FAILED, error=ErrorInfo("x", "y"))],
            batch_id=batch.batch_id,
            batch_state=BatchState.FAILED,
        )
    with pytest.raises(LeaseLost):
        await a.emit_progress(view.job_id, batch_id=batch.batch_id)
    with pytest.raises(LeaseLost):
        await a.hold(batch.batch_id)
    now = await b.batch(batch.batch_id)
    assert now is not None
    assert (now.state, now.handle, now.checkpoint) == (BatchState.SUBMITTING, None, {"remote": "created"})
    job = await b.job(view.job_id)
    assert job is not None and job.state == JobState.ACCEPTED
    assert await event_types(a) == events_before

    # b, the holder now, finishes it
    await b.batch_submitted(batch.batch_id, {"id": "remote-1"}, next_at=0.0)
    await b.finish_items(
        [ItemOutcome(view.items[0].item_id, ItemState.SUCCEEDED, outputs=[output_file("/out/0.txt")])],
        batch_id=batch.batch_id,
        batch_state=BatchState.DONE,
    )
    job = await b.job(view.job_id)
    assert job is not None and job.state == JobState.SUCCEEDED


async def test_a_holder_that_renews_keeps_its_job_and_one_that_lost_it_is_told(open_journal):
    a, b = await instances(open_journal, "a", "b")
    _, kept = await packed(a)
    for _ in range(3):
        await asyncio.sleep(LEASE / 2)
        assert await a.renew_leases() == []
    assert await b.claim_batches(["echo"]) == []  # well past the first lease, still a's

    _, lost = await packed(a)
    await asyncio.sleep(LEASE + 0.3)
    claimed = await b.claim_batches(["echo"])
    assert {c.batch_id for c in claimed} == {kept.batch_id, lost.batch_id}
    assert sorted(await a.renew_leases()) == sorted([kept.batch_id, lost.batch_id])
    assert await a.renew_leases() == []  # told once; a holds nothing now


async def test_a_restarted_instance_takes_its_own_jobs_back_at_once(open_journal):
    (a,) = await instances(open_journal, "a", lease=60.0)
    _, batch = await packed(a)
    if a.shared:
        (b,) = await instances(open_journal, "b", lease=60.0)
        assert await b.claim_batches(["echo"], own=True) == []  # b's own: none; a's lease is fresh
    (a_again,) = await instances(open_journal, "a", lease=60.0)
    (back,) = await a_again.claim_batches(["echo"], own=True)
    assert (back.batch_id, back.holder, back.lease_gen) == (batch.batch_id, "a", 2)
    with pytest.raises(LeaseLost):  # the old process's generation is fenced out too
        await a.batch_state(batch.batch_id, BatchState.FETCHING)
    await a_again.batch_state(batch.batch_id, BatchState.FETCHING)


async def test_a_journal_no_other_instance_uses_gives_a_restart_every_job_whatever_held_it(open_journal):
    (before,) = await instances(open_journal, "old-hostname:/var/lib/stenod", lease=600.0)
    _, batch = await packed(before)
    (after,) = await instances(open_journal, "new-hostname:/var/lib/stenod", lease=600.0)
    claimed = await after.claim_batches(["echo"], own=True)
    if after.shared:  # another instance may still be stepping it: it waits for the lease to run out
        assert claimed == []
    else:  # SQLite: one daemon, renamed (its host name changed) while the job was held
        assert [c.batch_id for c in claimed] == [batch.batch_id]


async def test_only_the_providers_an_instance_has_are_claimed(open_journal):
    a, b = await instances(open_journal, "a", "b")
    await packed(a, provider="sarvam")
    _, echo = await packed(a, provider="echo")
    await asyncio.sleep(LEASE + 0.3)
    assert [c.batch_id for c in await b.claim_batches(["echo", "vachana"])] == [echo.batch_id]
    assert await b.claim_batches([]) == []


async def test_two_instances_claiming_at_once_never_both_get_a_job(open_journal):
    a, b, c = await instances(open_journal, "a", "b", "c")
    for _ in range(20):
        await packed(a)
    await asyncio.sleep(LEASE + 0.3)
    got_b, got_c = await asyncio.gather(b.claim_batches(["echo"]), c.claim_batches(["echo"]))
    ids_b, ids_c = {x.batch_id for x in got_b}, {x.batch_id for x in got_c}
    assert not ids_b & ids_c
    assert len(ids_b | ids_c) == 20


async def test_an_item_finished_by_two_instances_at_once_gets_one_outcome_and_one_event(open_journal):
    a, b = await instances(open_journal, "a", "b")
    view, _ = await a.create_job(new_job(inputs=1))
    item_id = view.items[0].item_id
    await asyncio.gather(
        a.finish_items([ItemOutcome(item_id, ItemState.CANCELLED, error=ErrorInfo("cancelled", "a"))]),
        b.finish_items([ItemOutcome(item_id, ItemState.CANCELLED, error=ErrorInfo("cancelled", "b"))]),
    )
    assert (await event_types(a, view.job_id)).count("stenod.job.cancelled") == 1


async def test_one_file_seen_by_two_instances_becomes_one_job(open_journal):
    a, b = await instances(open_journal, "a", "b")

    def folder_job(device: int) -> NewJob:
        item = NewItem(input="/shared/talk.wav", name="talk.wav", path="/shared/talk.wav", size=10, device=device)
        return NewJob(
            source="folder",
            task="transcribe",
            provider="echo",
            items=[item],
            seen=("rule", "/shared/talk.wav", device, 77, 10, 123),
        )

    # the same file on a network mount: same inode, size and mtime, another device number
    (first, made_a), (second, made_b) = await asyncio.gather(a.create_job(folder_job(41)), b.create_job(folder_job(99)))
    assert sorted([made_a, made_b]) == [False, True]
    assert first.job_id == second.job_id
    assert len(await a.jobs()) == 1
    assert (await event_types(a)).count("stenod.job.accepted") == 1

    changed = NewJob(
        source="folder",
        task="transcribe",
        provider="echo",
        items=[NewItem(input="/shared/talk.wav", name="talk.wav", path="/shared/talk.wav", size=12)],
        seen=("rule", "/shared/talk.wav", 41, 77, 12, 456),
    )
    again, made = await b.create_job(changed)  # the file was written again: a new job
    assert made and again.job_id != first.job_id


async def test_the_job_records_the_instance_that_accepted_it(open_journal):
    (a,) = await instances(open_journal, "node-a")
    view, _ = await a.create_job(new_job())
    (item,) = await a.open_items()
    assert item.job_id == view.job_id and item.origin == "node-a"


async def test_max_concurrent_jobs_holds_across_instances(open_journal):
    a, b = await instances(open_journal, "a", "b")
    view, _ = await a.create_job(new_job(inputs=3))
    first, second, third = (i.item_id for i in view.items)
    held = await a.create_batch("echo", [first], next_at=0, max_jobs=2)
    assert held is not None
    assert await b.create_batch("echo", [second], next_at=0, max_jobs=2) is not None
    assert await b.create_batch("echo", [third], next_at=0, max_jobs=2) is None  # two unfinished: full
    assert await a.create_batch("sarvam", [third], next_at=0, max_jobs=2) is not None  # another provider's own
    await a.finish_items(
        [ItemOutcome(first, ItemState.SUCCEEDED, outputs=[])], batch_id=held.batch_id, batch_state=BatchState.DONE
    )
    view2, _ = await b.create_job(new_job())
    assert await b.create_batch("echo", [view2.items[0].item_id], next_at=0, max_jobs=2) is not None


async def test_racing_instances_never_exceed_max_concurrent_jobs(open_journal):
    journals = await instances(open_journal, "a", "b", "c")
    view, _ = await journals[0].create_job(new_job(inputs=12))
    ids = [i.item_id for i in view.items]
    made = await asyncio.gather(
        *(journals[n % 3].create_batch("echo", [item_id], next_at=0, max_jobs=4) for n, item_id in enumerate(ids))
    )
    assert sum(batch is not None for batch in made) == 4
    assert len(await journals[0].active_batches()) == 4


async def test_a_stopping_instance_releases_its_jobs_to_the_others_at_once(open_journal):
    a, b = await instances(open_journal, "a", "b", lease=600.0)
    _, batch = await packed(a)
    assert await b.claim_batches(["echo"]) == []
    await a.release_leases()
    (taken,) = await b.claim_batches(["echo"])
    assert (taken.batch_id, taken.holder) == (batch.batch_id, "b")


async def test_a_lone_daemon_takes_back_provider_jobs_of_a_provider_it_no_longer_has(open_journal):
    (before,) = await instances(open_journal, "a", lease=600.0)
    _, batch = await packed(before, provider="sarvam")
    (after,) = await instances(open_journal, "a", lease=600.0)
    claimed = await after.claim_batches(["echo"], own=True)  # sarvam was removed from the config
    if after.shared:  # another instance may have sarvam: the job waits for it
        assert claimed == []
    else:  # the only daemon: it takes the job, and its step fails it as "provider not available"
        assert [c.batch_id for c in claimed] == [batch.batch_id]


async def test_a_provider_pause_holds_for_every_instance_until_its_latest_end(open_journal):
    """A provider's "try again in N seconds" is the account's: every instance reads it,
    a shorter one does not cut a longer one short, and an ended one is gone."""
    a, b = await instances(open_journal, "a", "b")
    assert await b.provider_pauses() == {}
    await a.pause_provider("sarvam", 5.0)
    await b.pause_provider("sarvam", 1.0)
    await a.pause_provider("echo", 0.3)
    paused = await b.provider_pauses()
    assert sorted(paused) == ["echo", "sarvam"]
    assert 4.0 < paused["sarvam"] <= 5.0
    await asyncio.sleep(0.5)
    assert list(await a.provider_pauses()) == ["sarvam"]
    # the provider's row also counts its unfinished provider jobs: the two live side by side
    view, _ = await a.create_job(new_job(provider="sarvam"))
    assert await a.create_batch("sarvam", [view.items[0].item_id], next_at=0.0, max_jobs=4) is not None
    assert list(await b.provider_pauses()) == ["sarvam"]
