"""The dispatcher: the only component that calls providers.

It packs open items into provider jobs within each provider's limits, launches each job's
next step when it is due (:mod:`stenod.dispatch.stepper` runs the step: submit, poll, fetch, retry),
cancels what was cancelled, and finishes items that need no provider (a reused result, a
refused file: :mod:`stenod.dispatch.outcomes` writes them). Between steps it sleeps until the next
one is due: no busy polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import structlog

from stenod.dispatch.cancels import cancel_items
from stenod.dispatch.direct_finish import DirectFinisher
from stenod.dispatch.dispatch_state import DispatchState
from stenod.dispatch.lease_keeper import LeaseKeeper, LeaseMetrics
from stenod.dispatch.outcomes import DispatchMetrics, Outcomes, OutputSink
from stenod.dispatch.pacing import ProviderPauses
from stenod.dispatch.packing_pass import PackingPass
from stenod.dispatch.stepper import LiveText, ProviderRuntime, Stepper
from stenod.errors import LeaseLost, StenodError
from stenod.journal import BatchRow, JobJournal
from stenod.settings import RetrySettings

__all__ = ["Dispatcher"]

log = structlog.get_logger("stenod.dispatcher")

_CANCEL_CHECK_SECONDS = 2.0
# A pass over the open items reads the whole backlog. Behind a provider at capacity a
# backlog of thousands is read again at every accepted job; passes are spaced so that they
# take at most a fifth of the time (a pass of 1 ms: the next 4 ms later; of 10 ms: 40 ms).
_PASS_SPACING = 4.0


class Dispatcher:
    def __init__(
        self,
        journal: JobJournal,
        runtimes: Mapping[str, ProviderRuntime],
        sink: OutputSink,
        policy: RetrySettings,
        *,
        probe: Callable[[Path], float | None],
        pack_window_seconds: float = 1.0,
        progress_interval_seconds: float = 5.0,
        grace_seconds: float = 20.0,
        metrics: DispatchMetrics | None = None,
        idle: asyncio.Event | None = None,
        live: LiveText | None = None,
    ) -> None:
        self._journal = journal
        self._intake = PackingPass(journal, probe=probe, pack_window_seconds=pack_window_seconds)
        self._state = DispatchState(runtimes, self._intake)
        self._grace = grace_seconds
        self._live = live
        self._outcomes = Outcomes(sink, metrics)
        self._pauses = ProviderPauses(journal)
        self._stepper = Stepper(
            journal,
            self._outcomes,
            policy,
            state=self._state,
            pauses=self._pauses,
            progress_interval_seconds=progress_interval_seconds,
            metrics=metrics,
            live=live,
        )
        self._next_pass = 0.0  # loop time before which no pass over the open items starts
        self._keeper = LeaseKeeper(journal, self._state, metrics=metrics if isinstance(metrics, LeaseMetrics) else None)
        self._direct = DirectFinisher(journal, self._outcomes, self._state)
        self._stopping = False
        self.idle = idle  # set whenever nothing is left to do (tests, `stenod transcribe`)

    # -- called by sources ----------------------------------------------------------

    def notify(self) -> None:
        """New work was committed to the journal (a job accepted, a cancel requested)."""
        self._state.notify()

    def replace_runtimes(self, runtimes: Mapping[str, ProviderRuntime]) -> None:
        """A reload: steps already running keep the provider they started with."""
        for name, runtime in runtimes.items():
            old = self._state.runtimes.get(name)
            if old is not None and old is not runtime:
                runtime.in_flight = old.in_flight
        self._state.runtimes = runtimes
        self.notify()

    @property
    def active_jobs(self) -> int:
        return self._state.held

    # -- main loop ------------------------------------------------------------------

    async def run(self, stopping: asyncio.Event) -> None:
        await self._keeper.claim(own=True)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(None) as deadline:
                async with asyncio.TaskGroup() as tg:
                    self._state.task_group = tg
                    tg.create_task(self._relay_stop(stopping), name="dispatcher:stop-relay")
                    tg.create_task(self._keeper.run(stopping), name="dispatcher:leases")
                    while not stopping.is_set():
                        if self._state.dirty and loop.time() >= self._next_pass:
                            self._state.dirty = False
                            started = loop.time()
                            await self._take_in(tg)
                            self._next_pass = loop.time() + (loop.time() - started) * _PASS_SPACING
                        await self._launch_due(tg)
                        await self._sleep()
                    self._stopping = True
                    log.info("dispatcher.draining", in_flight=len(self._state.running), grace_seconds=self._grace)
                    deadline.reschedule(loop.time() + self._grace)
        except TimeoutError:
            log.warning("dispatcher.grace_expired", interrupted=len(self._state.running))
        finally:
            self._state.task_group = None
        # Steps are over: what this instance still holds is free for the others at once.
        # (A journal that cannot be reached now lets the leases run out instead.)
        with contextlib.suppress(StenodError):
            await self._journal.release_leases()

    async def _relay_stop(self, stopping: asyncio.Event) -> None:
        await stopping.wait()
        self._state.wake.set()

    async def _sleep(self) -> None:
        now = time.time()
        candidates = [t for t in (self._state.schedule.next_time(), self._intake.wakeup) if t is not None]
        if self._state.batches or self._state.running:
            candidates.append(now + _CANCEL_CHECK_SECONDS)
        if self._state.dirty:  # a pass is waiting for its spacing
            candidates.append(now + self._next_pass - asyncio.get_running_loop().time())
        timeout = max(0.0, min(candidates) - now) if candidates else None
        if (
            self.idle is not None
            and not self._state.batches
            and not self._state.running
            and not self._direct.finishing
            and self._intake.wakeup is None
            and not self._state.dirty
        ):
            self.idle.set()
        try:
            async with asyncio.timeout(timeout):
                await self._state.wake.wait()
        except TimeoutError:
            pass
        self._state.wake.clear()
        if self._intake.wakeup is not None and time.time() >= self._intake.wakeup:
            self._intake.wakeup = None
            self._state.dirty = True
        if self._state.batches or self._state.running:
            self._state.dirty = True  # re-check cancellations and freed capacity

    async def _launch_due(self, tg: asyncio.TaskGroup) -> None:
        if self._stopping:
            return
        due = self._state.schedule.pop_due(time.time())
        if not due:
            return
        await self._pauses.refresh()
        for batch_id in due:
            batch = self._state.batches.get(batch_id)
            if batch is None:
                continue
            if (until := self._pauses.until(batch.provider)) is not None:
                self._state.schedule.push(batch_id, until)  # the provider asked everyone to wait
                continue
            del self._state.batches[batch_id]
            self._state.running[batch_id] = tg.create_task(self._step(batch), name=f"batch:{batch_id}")

    # -- intake: preflight, cancel, pack --------------------------------------------

    async def _take_in(self, tg: asyncio.TaskGroup) -> None:
        full = [name for name, rt in self._state.runtimes.items() if rt.in_flight >= rt.max_concurrent_jobs]
        items = await self._journal.open_items(skip_providers=full)
        cancelled = set(await self._journal.cancel_requested_jobs())
        if cancelled:
            await self._cancel_batches(cancelled)
        found = await self._intake.sort(items, self._state.runtimes, self._direct.finishing)
        for item in found.cancelled:
            self._direct.start(tg, item, cancelled=True)
        for item in found.reused:
            self._direct.start(tg, item, reused=True)
        for item, error in found.failed:
            self._direct.start(tg, item, error=error)
        await self._intake.pack(found.groups, self._state.runtimes, self._state.adopt)

    async def _cancel_batches(self, job_ids: set[str]) -> None:
        batches = [b for b in self._state.batches.values() if any(i.job_id in job_ids for i in b.items)]
        for batch in await cancel_items(self._journal, self._state.runtimes, batches, job_ids):
            self._state.forget(batch.batch_id, batch.provider)

    # -- provider steps ---------------------------------------------------------------

    async def _step(self, batch: BatchRow) -> None:
        keep = True
        with structlog.contextvars.bound_contextvars(
            batch_id=batch.batch_id,
            provider=batch.provider,
            job_id=",".join(sorted({i.job_id for i in batch.items})),
        ):
            try:
                keep = await self._stepper.step(batch)
            except asyncio.CancelledError:
                log.info("batch.interrupted", state=str(batch.state))
                raise
            except LeaseLost:  # from the step, or from recording its retry or failure
                keep = False
                log.warning("batch.lease_lost", hint="another instance took this provider job over; nothing written")
            finally:
                self._state.running.pop(batch.batch_id, None)
                if self._live is not None:  # results (or the error) are in the journal now, or it runs again
                    self._live.finished({i.job_id for i in batch.items})
                if not keep or batch.batch_id in self._state.lost:
                    self._state.lost.discard(batch.batch_id)
                    self._state.forget(batch.batch_id, batch.provider)
                self._state.notify()
