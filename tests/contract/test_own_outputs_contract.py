"""stenod's own files in the journal, on SQLite and PostgreSQL alike: recorded before they
are written and with their size and mtime after, seen by every instance sharing the
journal, so that no watched folder takes one for an input (issue 23)."""

from __future__ import annotations

import asyncio
import time

import pytest

from stenod.errors import LeaseLost
from stenod.jobs import BatchState, ItemState
from stenod.journal import ItemOutcome, OutputFile, OwnOutput
from tests.contract.test_journal_contract import new_job
from tests.contract.test_lease_contract import LEASE, instances, packed


def written(path: str, size: int = 10, mtime_ns: int = 1_000) -> OutputFile:
    return OutputFile(path, path, size=size, mtime_ns=mtime_ns)


async def test_a_file_is_stenods_from_before_it_is_written_and_then_by_its_size_and_mtime(journal):
    view, _ = await journal.create_job(new_job(provider="echo"))
    item = view.items[0].item_id
    assert await journal.own_output("/out/call.txt") is None

    await journal.expect_outputs({item: ["/out/call.txt", "/out/call.error.json"]})
    assert await journal.own_output("/out/call.txt") == OwnOutput(None, None)  # being written

    await journal.finish_items([ItemOutcome(item, ItemState.SUCCEEDED, outputs=[written("/out/call.txt", 42, 7)])])
    own = await journal.own_output("/out/call.txt")
    assert own == OwnOutput(42, 7)
    assert own.matches(42, 7)
    assert not own.matches(43, 7)  # a user's file in its place is the user's
    # The error file it might have written and did not is not held back as stenod's.
    assert await journal.own_output("/out/call.error.json") is None


async def test_files_an_earlier_attempt_announced_and_never_recorded_are_handed_to_the_next(journal):
    """An attempt killed between writing its files and recording them left them announced
    with no size: the next attempt at the item is told which (and since when), the writer
    removes those it does not write again, and the item's outcome forgets them."""
    view, _ = await journal.create_job(new_job(provider="echo"))
    item = view.items[0].item_id
    before = time.time()
    assert await journal.expect_outputs({item: ["/out/c.txt", "/out/c.json", "/out/c.error.json"]}) == {}

    unsettled = await journal.expect_outputs({item: ["/out/c.error.json"]})  # the next attempt fails
    assert sorted(u.key for u in unsettled[item]) == ["/out/c.error.json", "/out/c.json", "/out/c.txt"]
    assert all(before - 1 <= u.since <= time.time() + 1 for u in unsettled[item])

    await journal.finish_items([ItemOutcome(item, ItemState.FAILED, outputs=[written("/out/c.error.json")])])
    assert await journal.own_output("/out/c.txt") is None
    assert await journal.expect_outputs({item: ["/out/c.error.json"]}) == {}  # nothing left unsettled


async def test_a_file_written_again_is_pending_again_until_its_new_size_is_recorded(journal):
    view, _ = await journal.create_job(new_job(provider="echo"))
    item = view.items[0].item_id
    await journal.finish_items([ItemOutcome(item, ItemState.SUCCEEDED, outputs=[written("/out/a.txt", 10, 1)])])

    await journal.expect_outputs({item: ["/out/a.txt"]})  # a correction rewrites it
    assert await journal.own_output("/out/a.txt") == OwnOutput(None, None)
    await journal.record_outputs(item, [written("/out/a.txt", 12, 2)])
    assert await journal.own_output("/out/a.txt") == OwnOutput(12, 2)


async def test_an_outcome_another_instance_took_first_still_records_the_files_on_disk(journal):
    view, _ = await journal.create_job(new_job(provider="echo"))
    item = view.items[0].item_id
    await journal.finish_items([ItemOutcome(item, ItemState.SUCCEEDED, outputs=[written("/out/a.txt", 10, 1)])])
    await journal.finish_items([ItemOutcome(item, ItemState.SUCCEEDED, outputs=[written("/out/a.txt", 10, 5)])])
    assert await journal.own_output("/out/a.txt") == OwnOutput(10, 5)  # the last write is the file there


async def test_every_instance_sees_the_files_a_holder_is_about_to_write(open_journal):
    a, b = await instances(open_journal, "a", "b")
    view, batch = await packed(a)
    item = view.items[0].item_id
    await a.hold(batch.batch_id, outputs={item: ["/shared/call.txt"]})
    assert await b.own_output("/shared/call.txt") == OwnOutput(None, None)
    await a.finish_items(
        [ItemOutcome(item, ItemState.SUCCEEDED, outputs=[written("/shared/call.txt", 5, 9)])],
        batch_id=batch.batch_id,
        batch_state=BatchState.DONE,
    )
    assert await b.own_output("/shared/call.txt") == OwnOutput(5, 9)


async def test_a_holder_that_lost_its_lease_records_no_file(open_journal):
    a, b = await instances(open_journal, "a", "b")
    view, batch = await packed(a)
    await asyncio.sleep(LEASE + 0.3)
    assert await b.claim_batches(["echo"])
    with pytest.raises(LeaseLost):
        await a.hold(batch.batch_id, outputs={view.items[0].item_id: ["/shared/late.txt"]})
    assert await b.own_output("/shared/late.txt") is None
