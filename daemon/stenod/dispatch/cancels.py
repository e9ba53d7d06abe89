"""Cancelling items that are in provider jobs waiting for their next step: the provider
is asked to cancel a job all of whose items are cancelled (where it can), and the items
end ``cancelled``. Items of a step under way are left to the next pass after it."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import structlog

from stenod.dispatch.stepper import ProviderRuntime
from stenod.errors import ErrorInfo, JobError, LeaseLost
from stenod.jobs import BatchState, ItemState
from stenod.journal import BatchRow, ItemOutcome, JobJournal

__all__ = ["cancel_items"]

log = structlog.get_logger("stenod.dispatcher")


async def cancel_items(
    journal: JobJournal,
    runtimes: Mapping[str, ProviderRuntime],
    batches: Sequence[BatchRow],
    job_ids: Collection[str],
) -> list[BatchRow]:
    """End the items of ``job_ids`` in ``batches`` as cancelled; returns the provider jobs
    that are over for this instance (all their items cancelled, or taken over by another
    instance, which cancels them in turn)."""
    over = []
    for batch in batches:
        mine = [i for i in batch.items if i.job_id in job_ids]
        if not mine:
            continue
        runtime = runtimes.get(batch.provider)
        if len(mine) == len(batch.items) and batch.handle is not None and runtime is not None:
            try:
                await runtime.provider.cancel(batch.handle)
            except JobError as exc:
                log.warning("provider.cancel_failed", provider=batch.provider, error=exc.message)
        outcomes = [
            ItemOutcome(i.item_id, ItemState.CANCELLED, error=ErrorInfo("cancelled", "cancelled on request"))
            for i in mine
        ]
        done = len(mine) == len(batch.items)
        try:
            await journal.finish_items(
                outcomes, batch_id=batch.batch_id, batch_state=BatchState.FAILED if done else None
            )
        except LeaseLost:
            done = True  # another instance has it now, and its cancel with it
        if done:
            over.append(batch)
    return over
