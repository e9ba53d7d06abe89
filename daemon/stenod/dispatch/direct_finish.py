"""Finishing items that need no provider: a cancelled item not yet packed, an earlier
identical input's result reused, a file refused before any upload. Each is written (its
outputs or its error file) and committed in a task of the dispatcher's TaskGroup; the
journal takes an item's outcome once, so of two instances finishing the same item only
one adds its events."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog

from stenod.dispatch.dispatch_state import DispatchState
from stenod.dispatch.outcomes import Outcomes, result_from_json
from stenod.errors import ErrorInfo
from stenod.jobs import ItemState
from stenod.journal import ItemOutcome, JobJournal, OpenItem, Unsettled
from stenod.provider import ItemResult

log = structlog.get_logger("stenod.dispatcher")


class DirectFinisher:
    def __init__(self, journal: JobJournal, outcomes: Outcomes, state: DispatchState) -> None:
        self._journal = journal
        self._outcomes = outcomes
        self._state = state  # told each item id once its outcome is committed (or failed to be)
        self.finishing: set[str] = set()  # items being finished now: not to be looked at again

    def start(
        self,
        tg: asyncio.TaskGroup,
        item: OpenItem,
        *,
        error: ErrorInfo | None = None,
        reused: bool = False,
        cancelled: bool = False,
    ) -> None:
        self.finishing.add(item.item_id)
        tg.create_task(self._finish(item, error, reused, cancelled), name=f"finish:{item.item_id}")

    async def _expect(self, item: OpenItem, result: ItemResult | None) -> Sequence[Unsettled]:
        """The files about to be written are stenod's: no watched folder is to take them.
        Returns the files an earlier attempt at the item wrote and never recorded."""
        planned = await asyncio.to_thread(self._outcomes.planned, [(item, result)])
        unsettled = await self._journal.expect_outputs(planned)
        return unsettled.get(item.item_id, ())

    async def _finish(self, item: OpenItem, error: ErrorInfo | None, reused: bool, cancelled: bool) -> None:
        try:
            with structlog.contextvars.bound_contextvars(job_id=item.job_id, provider=item.provider):
                if cancelled:
                    outcome = ItemOutcome(
                        item.item_id, ItemState.CANCELLED, error=ErrorInfo("cancelled", "cancelled on request")
                    )
                elif reused and item.result is not None:
                    result = result_from_json(item.item_id, item.result)
                    unsettled = await self._expect(item, result)
                    outcome = await self._outcomes.write(item, result, unsettled=unsettled)
                    log.info("item.reused", input=item.input)
                else:
                    info = error or ErrorInfo("internal_error", "item could not be processed")
                    unsettled = await self._expect(item, None)
                    outcome = await self._outcomes.write_failure(item, info, unsettled=unsettled)
            await self._journal.finish_items([outcome])
            self._outcomes.recorded([item], [outcome])
        finally:
            self.finishing.discard(item.item_id)
            self._state.item_finished(item.item_id)
