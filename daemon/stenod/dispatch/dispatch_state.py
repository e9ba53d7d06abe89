"""What the dispatcher and its parts share: the provider jobs this instance holds (waiting
for their next step, or stepping now), when each is due, the providers it has, and the
signal that wakes the dispatcher's loop.

The parts (the stepper, the lease keeper, the direct finisher) receive this one object
and change the dispatcher's view through its methods, instead of callbacks into it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from stenod.dispatch.packing_pass import PackingPass
from stenod.dispatch.schedule import Schedule
from stenod.journal import BatchRow

if TYPE_CHECKING:
    from stenod.dispatch.stepper import ProviderRuntime


class DispatchState:
    """The dispatcher's shared state. Lives on the event loop; no part keeps a copy."""

    def __init__(self, runtimes: Mapping[str, ProviderRuntime], packing: PackingPass) -> None:
        self.runtimes = runtimes  # replaced whole on a reload
        self.packing = packing
        self.batches: dict[str, BatchRow] = {}  # held, waiting for their next step
        self.running: dict[str, asyncio.Task[None]] = {}  # stepping now
        self.lost: set[str] = set()  # running steps whose lease was lost: cancelled, then forgotten
        self.schedule = Schedule()
        self.wake = asyncio.Event()
        self.dirty = True  # the open items are to be read again
        self.task_group: asyncio.TaskGroup | None = None  # the dispatcher's, while it runs

    @property
    def held(self) -> int:
        """Provider jobs this instance holds (waiting or stepping)."""
        return len(self.batches) + len(self.running)

    def notify(self) -> None:
        """Something changed that the loop must look at: read the open items again."""
        self.dirty = True
        self.wake.set()

    def adopt(self, batch: BatchRow) -> None:
        """A provider job this instance now holds (packed here, or claimed)."""
        self.batches[batch.batch_id] = batch
        runtime = self.runtimes.get(batch.provider)
        if runtime is not None:
            runtime.in_flight += 1
        self.schedule.push(batch.batch_id, batch.next_at)

    def claimed(self, batch: BatchRow) -> None:
        """The lease keeper took ``batch`` over (or back, at start)."""
        if batch.batch_id not in self.batches and batch.batch_id not in self.running:
            self.adopt(batch)
            self.wake.set()

    def reschedule(self, batch: BatchRow, when: float) -> None:
        """The stepper's verdict: step ``batch`` again at ``when`` (epoch seconds)."""
        self.batches[batch.batch_id] = batch
        self.schedule.push(batch.batch_id, when)

    def forget(self, batch_id: str, provider: str) -> None:
        """``batch_id`` is no longer this instance's to step (finished, cancelled, lost)."""
        self.batches.pop(batch_id, None)
        self.schedule.due.pop(batch_id, None)
        runtime = self.runtimes.get(provider)
        if runtime is not None:
            runtime.in_flight = max(0, runtime.in_flight - 1)

    def lease_lost(self, batch_id: str) -> None:
        """Another instance holds this provider job now: stop stepping it here."""
        batch = self.batches.get(batch_id)
        if batch is not None:
            self.forget(batch_id, batch.provider)
        task = self.running.get(batch_id)
        if task is not None:
            self.lost.add(batch_id)
            task.cancel()

    def item_finished(self, item_id: str) -> None:
        """An item finished without a provider is committed (or failed to be)."""
        self.packing.forget(item_id)
        self.notify()

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """A short side task of a step (a progress event) in the dispatcher's TaskGroup."""
        if self.task_group is None:
            work.close()
            return
        self.task_group.create_task(work, name=name)
