"""One provider job through its states: submit (resumable, through checkpoints), poll on the
provider's pace, fetch, and retry what may succeed later, with backoff. The dispatcher
decides when a step is due; this module decides what the step does."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from stenod.dispatch.outcomes import DISK_FULL, DispatchMetrics, Outcomes
from stenod.dispatch.pacing import ProviderPauses, backoff_delay
from stenod.dispatch.step_context import JournalStepContext, batch_value
from stenod.errors import ErrorInfo, JobError, JournalError, LeaseExpired, LeaseLost, PermanentError, RetryableError
from stenod.fault_points import OUTPUTS, OUTPUTS_WRITTEN, pause_at
from stenod.jobs import BatchState, ItemState
from stenod.journal import BatchRow, ItemOutcome, JobJournal, OpenItem
from stenod.provider import (
    ItemResult,
    Limits,
    Provider,
    RemoteState,
    Segment,
    Status,
    is_finished,
)
from stenod.settings import RetrySettings

if TYPE_CHECKING:
    from stenod.dispatch.dispatch_state import DispatchState

__all__ = ["LiveText", "ProviderRuntime", "Stepper"]

log = structlog.get_logger("stenod.dispatcher")
_BUG_HINT = "This is a bug; please report it with the log."
_DISK_FULL_RETRY_SECONDS = 15.0  # writing again is cheap, but each try fetches the results again


@dataclass(slots=True)
class ProviderRuntime:
    """A configured provider with what the dispatcher needs to pace it."""

    name: str
    provider: Provider
    limits: Limits
    poll_interval: float
    max_concurrent_jobs: int
    in_flight: int = 0


class LiveText(Protocol):
    """Where decoded text goes before the job ends (the HTTP streams' watch)."""

    def segment(self, job_id: str, segment: Mapping[str, Any]) -> None: ...
    def finished(self, job_ids: Iterable[str]) -> None: ...


class Stepper:
    """Runs the steps of provider jobs; the dispatcher calls :meth:`advance` when one is due."""

    def __init__(
        self,
        journal: JobJournal,
        outcomes: Outcomes,
        policy: RetrySettings,
        *,
        state: DispatchState,
        pauses: ProviderPauses,
        progress_interval_seconds: float,
        metrics: DispatchMetrics | None = None,
        live: LiveText | None = None,
    ) -> None:
        self._journal = journal
        self._outcomes = outcomes
        self._policy = policy
        self._pauses = pauses
        self._state = state
        self._progress_interval = progress_interval_seconds
        self._metrics = metrics
        self._live = live
        self._last_progress: dict[str, float] = {}

    async def step(self, batch: BatchRow) -> bool:
        """Run the provider job's due steps; a failure is recorded as a retry or the job's end.
        False once it is finished. LeaseLost (another instance has the job) goes to the caller."""
        try:
            return await self._step(batch)
        except LeaseExpired:
            # Paused (or slow) past the lease while writing outputs: nothing more went into
            # place and nothing was recorded. A renewal tells whether the job is still ours
            # (LeaseLost if not); if it is, the step runs again from what the journal has.
            log.warning("batch.lease_expired_writing", hint="outputs are written again after renewing the lease")
            await self._journal.hold(batch.batch_id)
            fresh = await self._journal.batch(batch.batch_id)
            if fresh is None or fresh.state in (BatchState.DONE, BatchState.FAILED):
                return False
            self._state.reschedule(fresh, time.time())
            return True

    async def _step(self, batch: BatchRow) -> bool:
        runtime = self._state.runtimes.get(batch.provider)
        try:
            if runtime is None:
                raise PermanentError(f"provider {batch.provider!r} is not available", code="unknown_provider")
            if not batch.items:
                await self._journal.finish_items([], batch_id=batch.batch_id, batch_state=BatchState.FAILED)
                return False
            return await self.advance(runtime, batch)
        except RetryableError as exc:
            return await self.retry(batch, exc)
        except JobError as exc:
            await self.fail(batch, exc.info())
            return False
        except (asyncio.CancelledError, LeaseLost, LeaseExpired, JournalError):
            # JournalError: the journal is unusable or a commit is in doubt; the daemon stops
            # and its restart reads what was committed (failing the job here would write an
            # error file beside outputs the doubtful commit may have recorded).
            raise
        except Exception as exc:  # a bug in a plugin or here: the job fails, the daemon carries on
            log.exception("batch.internal_error")
            await self.fail(
                batch,
                ErrorInfo(
                    "internal_error",
                    f"{type(exc).__name__}: {exc}",
                    hint="This is a bug; please report it with the log.",
                ),
            )
            return False

    async def advance(self, runtime: ProviderRuntime, batch: BatchRow) -> bool:
        """Run steps of one provider job while they are due; False once it is finished."""
        provider = runtime.provider
        if batch.state == BatchState.SUBMITTING:
            value = batch_value(runtime.name, runtime.provider, batch)
            ctx = JournalStepContext(
                self._journal,
                batch.batch_id,
                batch.checkpoint,
                lambda f: self._local_progress(batch, f),
                self._segment_sink(batch),
            )
            handle = await self._call(runtime, "submit", provider.submit(value, ctx))
            done = is_finished(handle)
            next_at = time.time() + (0.0 if done else runtime.poll_interval)
            await self._journal.batch_submitted(batch.batch_id, handle, next_at=next_at)
            log.info("batch.submitted", items=len(batch.items))
            batch = _replace(batch, state=BatchState.POLLING, handle=dict(handle), attempts=0, next_at=next_at)
            if not done and runtime.poll_interval > 0:
                self._state.reschedule(batch, next_at)
                return True
        if batch.state == BatchState.POLLING:
            assert batch.handle is not None
            status = await self._call(runtime, "poll", provider.poll(batch.handle))
            # The interval runs from the answer, not the request: a call delayed on its way
            # (a busy loop, a full connection pool) must not make the next one arrive early.
            poll_time = time.time()
            if status.state in (RemoteState.PENDING, RemoteState.RUNNING):
                delay = max(runtime.poll_interval, status.retry_after or 0.0)
                next_at = poll_time + delay + random.uniform(0, max(0.05, delay * 0.1))
                changed = await self._journal.batch_polled(
                    batch.batch_id,
                    running=status.state == RemoteState.RUNNING,
                    progress=status.progress,
                    next_at=next_at,
                    poll_time=poll_time,
                )
                await self._maybe_progress_events(changed, batch.batch_id)
                self._state.reschedule(_replace(batch, attempts=0, last_poll_at=poll_time), next_at)
                return True
            return await self._conclude(runtime, batch, status)
        if batch.state == BatchState.FETCHING:
            return await self._fetch(runtime, batch)
        return False

    async def _conclude(self, runtime: ProviderRuntime, batch: BatchRow, status: Status) -> bool:
        if status.state == RemoteState.DONE:
            await self._journal.batch_state(batch.batch_id, BatchState.FETCHING)
            return await self._fetch(runtime, _replace(batch, state=BatchState.FETCHING))
        if status.state == RemoteState.CANCELLED:
            outcomes = [
                ItemOutcome(
                    i.item_id,
                    ItemState.CANCELLED,
                    error=status.error or ErrorInfo("cancelled", "the provider cancelled the job"),
                )
                for i in batch.items
            ]
            await self._journal.finish_items(outcomes, batch_id=batch.batch_id, batch_state=BatchState.FAILED)
            return False
        await self.fail(batch, status.error or ErrorInfo("provider_failed", f"{runtime.name} reported the job failed"))
        return False

    async def _fetch(self, runtime: ProviderRuntime, batch: BatchRow) -> bool:
        assert batch.handle is not None
        results = await self._call(runtime, "fetch", runtime.provider.fetch(batch.handle))
        by_id = {r.item_id: r for r in results}
        pairs = [
            (
                item,
                by_id.get(item.item_id)
                or ItemResult(
                    item.item_id,
                    error=ErrorInfo("missing_result", f"{runtime.name} returned no result for {item.name}"),
                ),
            )
            for item in batch.items
            if not item.state.terminal
        ]
        await self._finish(batch, pairs, BatchState.DONE)
        release = getattr(runtime.provider, "release", None)
        if release is not None:
            try:
                await release(batch.handle)
            except JobError as exc:  # results are safe; leftovers are the provider's to expire
                log.warning("provider.release_failed", error=exc.message)
        return False

    async def _call(self, runtime: ProviderRuntime, operation: str, awaitable: Any) -> Any:
        if self._metrics is None:
            return await awaitable
        with self._metrics.provider_call(runtime.name, operation):
            try:
                return await awaitable
            except JobError as exc:
                self._metrics.provider_error(runtime.name, exc.code)
                raise

    async def retry(self, batch: BatchRow, exc: RetryableError) -> bool:
        # The journal, not our copy, has the checkpoints the failed step committed.
        batch = await self._journal.batch(batch.batch_id) or batch
        # A status call the provider asked us to delay (429 + Retry-After) is pacing, not a
        # failure: it does not use up an attempt, or a long job would fail for being polled.
        pacing = batch.state == BatchState.POLLING and exc.retry_after is not None
        # Nor does a full disk: the item waits for room however long that takes.
        waiting = pacing or exc.code == DISK_FULL
        attempts = batch.attempts if waiting else batch.attempts + 1
        if attempts >= self._policy.max_attempts:
            await self.fail(
                batch,
                ErrorInfo(exc.code, f"gave up after {attempts} attempts: {exc.message}", retryable=True, hint=exc.hint),
            )
            return False
        if exc.retry_after is not None:  # the provider's answer holds for all its jobs
            await self._pauses.pause(batch.provider, exc.retry_after)
        delay = backoff_delay(attempts, self._policy, exc.retry_after)
        if exc.code == DISK_FULL:
            delay = min(self._policy.max_seconds, _DISK_FULL_RETRY_SECONDS)
        runtime = self._state.runtimes.get(batch.provider)
        next_at = time.time() + delay
        if batch.state == BatchState.POLLING and runtime is not None:
            # A refused or failed status call still counts as a call for the provider's pacing.
            next_at = max(next_at, time.time() + runtime.poll_interval)
        await self._journal.batch_retry(batch.batch_id, attempts=attempts, next_at=next_at, error=exc.info())
        if self._metrics is not None:
            self._metrics.retry(batch.provider)
        log.warning(
            "provider.retry_scheduled",
            attempt=attempts,
            delay_seconds=round(delay, 2),
            error=exc.message,
            retry_after=exc.retry_after,
        )
        self._state.reschedule(_replace(batch, attempts=attempts), next_at)
        return True

    async def fail(self, batch: BatchRow, error: ErrorInfo) -> None:
        log.warning("batch.failed", code=error.code, message=error.message)
        pairs = [(i, ItemResult(i.item_id, error=error)) for i in batch.items if not i.state.terminal]
        await self._finish(batch, pairs, BatchState.FAILED, error)

    async def _finish(
        self,
        batch: BatchRow,
        pairs: list[tuple[OpenItem, ItemResult]],
        state: BatchState,
        error: ErrorInfo | None = None,
    ) -> None:
        """Write the items' outputs or error files, record them, then report them. Files are
        outside the journal's transactions: the lease is renewed first, and nothing goes into
        place once it may have run out (LeaseExpired), so an instance paused meanwhile does
        not write for a job another may have taken over. Their names are recorded with the
        renewal, so no watched folder takes them for new work while they are being written."""
        planned = await asyncio.to_thread(self._outcomes.planned, pairs)
        held = await self._journal.hold(batch.batch_id, outputs=planned)
        pause_at(OUTPUTS)
        outcomes = await asyncio.to_thread(self._outcomes.write_batch, pairs, held)
        pause_at(OUTPUTS_WRITTEN)
        await self._journal.finish_items(outcomes, batch_id=batch.batch_id, batch_state=state, batch_error=error)
        self._outcomes.recorded(batch.items, outcomes)

    def _local_progress(self, batch: BatchRow, fraction: float) -> None:
        jobs = sorted({i.job_id for i in batch.items})
        now = time.monotonic()
        due = [j for j in jobs if now - self._last_progress.get(j, 0.0) >= self._progress_interval]
        if not due:
            return
        for j in due:
            self._last_progress[j] = now
        self._state.spawn(self._record_progress(due, fraction, batch.batch_id), f"progress:{batch.batch_id}")

    async def _record_progress(self, jobs: list[str], fraction: float, batch_id: str) -> None:
        try:
            await self._journal.set_progress(jobs, max(0.0, min(0.99, fraction)), batch_id=batch_id)
            for job_id in jobs:
                await self._journal.emit_progress(job_id, batch_id=batch_id)
        except LeaseLost:
            pass  # the step itself stops at its next write; a progress event is not worth more

    async def _maybe_progress_events(self, job_ids: list[str], batch_id: str) -> None:
        now = time.monotonic()
        for job_id in job_ids:
            if now - self._last_progress.get(job_id, 0.0) >= self._progress_interval:
                self._last_progress[job_id] = now
                await self._journal.emit_progress(job_id, batch_id=batch_id)

    def _segment_sink(self, batch: BatchRow) -> Callable[[str, Segment], None] | None:
        live = self._live
        if live is None:
            return None
        jobs = {i.item_id: i.job_id for i in batch.items}

        def sink(item_id: str, segment: Segment) -> None:
            job_id = jobs.get(item_id)
            if job_id is not None:
                live.segment(job_id, {"start": segment.start, "end": segment.end, "text": segment.text})

        return sink


def _replace(batch: BatchRow, **changes: Any) -> BatchRow:
    return replace(batch, **changes)
