"""The journal port on SQL: every method is one operation of :mod:`stenod.adapters.sql`
run by a driver (the SQLite writer thread, or a PostgreSQL pool) in one transaction.

Every state change and the event it produces are committed in one transaction. Public
job states are derived from item states (``stenod.jobs.derive_job_state``).
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from stenod.adapters.sql import batch_writes, emit, intake_writes, leases, own_outputs, pauses, retention
from stenod.adapters.sql.emit import Emitter
from stenod.adapters.sql.reads import Driver
from stenod.adapters.sql.statements import Op
from stenod.adapters.sql.voices import SqlVoices
from stenod.errors import ErrorInfo, LeaseLost
from stenod.events import JobEvent
from stenod.jobs import BatchState, JobView
from stenod.journal import BatchRow, FinishedJob, Held, ItemOutcome, NewJob, OutputFile, Unsettled

T = TypeVar("T")


def _then_flush(op: Callable[[Emitter], Op[T]], em: Emitter) -> Op[T]:
    """The operation, then the events it made, in the same transaction."""
    result = yield from op(em)
    yield from emit.flush(em)
    return result


def default_instance_id(state_dir: object = None) -> str:
    """The host name and the state directory: stable across restarts, distinct per daemon."""
    return f"{socket.gethostname()}:{os.path.abspath(str(state_dir or '.'))}"


class SqlJournal(SqlVoices):
    """The journal's methods, for any driver. ``outbox``: keep events for a relay (a daemon
    without a broker keeps only each job's history). ``instance_id`` holds the provider jobs
    this journal object creates or claims, for ``lease_seconds`` after each write or renewal;
    ``clock`` is the time the leases are measured in (the database's, for a shared journal)."""

    shared = False  # other instances may use the same journal (the PostgreSQL one says so)

    def __init__(
        self,
        driver: Driver,
        *,
        outbox: bool = True,
        inline_transcript_bytes: int = 256 * 1024,
        instance_id: str | None = None,
        lease_seconds: float = 30.0,
        clock: Callable[[], float] = time.time,
        notify: str | None = None,
    ) -> None:
        super().__init__(driver)
        self._outbox = outbox
        self._inline = inline_transcript_bytes
        self._notify = notify  # a statement telling other processes that events were committed
        self.instance_id = instance_id or default_instance_id()
        self.lease_seconds = lease_seconds
        self._clock = clock
        self._held: dict[str, int] = {}  # provider jobs this instance holds: id -> lease generation
        # Set after any commit that may have added outbox rows; the relay waits on it.
        self.outbox_ready = asyncio.Event()
        # Told, after each commit, the jobs whose events it added (the HTTP streams' watch).
        self.on_change: Callable[[set[str]], None] | None = None
        self.on_entered: Callable[[Sequence[tuple[str, str]]], None] | None = None

    async def _change(self, make: Callable[[], Op[T]], *, fence: str | None = None) -> T:
        """A write that adds no event; with ``fence``, only while this instance holds that provider job."""
        if fence is None:
            return await self._driver.run(make, write=True)
        return await self._driver.run(self._fenced(fence, make), write=True)

    def _fenced(self, batch_id: str, make: Callable[[], Op[T]]) -> Callable[[], Op[T]]:
        """The operation behind the fence of the lease on ``batch_id`` (renewed by it)."""
        gen = self._held.get(batch_id)
        if gen is None:
            raise LeaseLost(batch_id)

        def fenced() -> Op[T]:
            yield from leases.fence(batch_id, self.instance_id, gen, self._clock() + self.lease_seconds)
            return (yield from make())

        return fenced

    async def _write(self, op: Callable[[Emitter], Op[T]], *, fence: str | None = None) -> T:
        """A write that may add events: the relay and the watchers hear of it after the commit.
        With ``fence``, only while this instance holds that provider job."""
        emitters: list[Emitter] = []

        def unfenced() -> Op[T]:
            emitters[:] = [Emitter(self._outbox, self._inline, notify=self._notify)]  # a fresh one per attempt
            return _then_flush(op, emitters[0])

        make = unfenced if fence is None else self._fenced(fence, unfenced)

        result = await self._driver.run(make, write=True)
        if self._outbox:
            self.outbox_ready.set()
        changed = set(emitters[0].changed) if emitters else set()
        if changed and self.on_change is not None:
            self.on_change(changed)
        if emitters and emitters[0].entered and self.on_entered is not None:
            self.on_entered(emitters[0].entered)
        return result

    # -- intake ---------------------------------------------------------------------

    async def create_job(self, new: NewJob) -> tuple[JobView, bool]:
        """Commit a job (and its seen-file record) and its accepted event; with a known
        ``request_id``, the existing job and ``created=False``."""
        return await self._write(lambda em: intake_writes.create_job(em, new, self.instance_id))

    async def record_finished_job(self, new: NewJob) -> JobView:
        """Commit a job that finished before it was journaled (a voice command answered in
        memory: each item with its ``result``) and its ``succeeded`` event."""
        return await self._write(lambda em: intake_writes.record_finished_job(em, new, self.instance_id))

    async def forget_seen(self, rule: str, path: str) -> None:
        await self._change(lambda: intake_writes.forget_seen(rule, path))

    async def record_seen(self, rule: str, path: str, device: int, inode: int, size: int, mtime_ns: int) -> None:
        """Remember a file that was looked at but made no job (e.g. ignored), so rescans skip it."""
        await self._change(lambda: intake_writes.record_seen(rule, path, device, inode, size, mtime_ns))

    # -- dispatcher -------------------------------------------------------------------

    async def claim_batches(self, providers: Sequence[str], *, own: bool = False) -> list[BatchRow]:
        """Take the unfinished provider jobs of ``providers`` that nobody holds or whose
        holder's lease expired; with ``own`` (at start), also those this instance held
        before it restarted."""
        now = self._clock()
        claimed = await self._driver.run(
            lambda: leases.claim(
                self.instance_id,
                sorted(providers),
                now,
                now + self.lease_seconds,
                own=own,
                anyone=own and not self.shared,
            ),
            write=True,
        )
        self._held.update((b.batch_id, b.lease_gen) for b in claimed)
        return claimed

    async def renew_leases(self) -> list[str]:
        """Renew every lease this instance holds; returns the provider jobs it has lost."""
        held = dict(self._held)
        if not held:
            return []
        lost = await self._driver.run(
            lambda: leases.renew(self.instance_id, held, self._clock() + self.lease_seconds), write=True
        )
        for batch_id in lost:
            if self._held.get(batch_id) == held[batch_id]:
                del self._held[batch_id]
        return lost

    async def next_expiry(self, providers: Sequence[str]) -> float | None:
        """Seconds until the first lease of another instance on ``providers`` runs out (None: none held)."""
        until = await self._read(lambda: leases.next_expiry(self.instance_id, sorted(providers)))
        return None if until is None else max(0.0, until - self._clock())

    async def pause_provider(self, provider: str, seconds: float) -> None:
        """The provider asked to be left alone for ``seconds`` (every instance holds back)."""
        until = self._clock() + seconds
        await self._change(lambda: pauses.pause(provider, until))

    async def provider_pauses(self) -> dict[str, float]:
        """Seconds each paused provider is still to be left alone."""
        now = self._clock()
        paused = await self._read(lambda: pauses.pauses(now))
        return {provider: until - now for provider, until in paused.items()}

    async def release_leases(self) -> None:
        """Stopping: the provider jobs this instance holds may be taken over at once."""
        held = dict(self._held)
        if held:
            await self._driver.run(lambda: leases.release(self.instance_id, held), write=True)
            self._held.clear()

    async def hold(self, batch_id: str, *, outputs: Mapping[str, Sequence[str]] | None = None) -> Held:
        """Renew the lease before a side effect outside the journal (writing output files),
        and record the ``outputs`` about to be written (item id -> keys) as stenod's own;
        raises LeaseLost, with nothing recorded, if another instance has the provider job now.
        Returns until when the side effect may happen: counted from before the renewal was
        sent (the lease it writes runs at least that long), less a tenth for the clocks (each
        instance's offset to the database's is measured to half a round trip); and the files
        an earlier attempt at these items left unsettled (``Held.unsettled``)."""
        planned = dict(outputs or {})
        sent = time.monotonic()
        try:
            unsettled = await self._change(lambda: own_outputs.expect(planned), fence=batch_id)
        except LeaseLost:
            self._held.pop(batch_id, None)
            raise
        # A journal no other instance uses: nobody can take the job, however long this takes.
        return Held(batch_id, sent + 0.9 * self.lease_seconds if self.shared else math.inf, unsettled)

    async def expect_outputs(self, outputs: Mapping[str, Sequence[str]]) -> dict[str, list[Unsettled]]:
        """Record files about to be written for items of no provider job (item id -> keys);
        returns what earlier attempts at them left unsettled (see ``own_outputs.expect``)."""
        planned = dict(outputs)
        return await self._change(lambda: own_outputs.expect(planned))

    async def record_outputs(self, item_id: str, files: Sequence[OutputFile]) -> None:
        """Files written again for a finished item (a correction), with their new size and mtime."""
        written = list(files)
        await self._change(lambda: own_outputs.record(item_id, written))

    async def create_batch(
        self, provider: str, item_ids: Sequence[str], *, next_at: float, max_jobs: int | None = None
    ) -> BatchRow | None:
        """Record the intent to submit these items as one provider job (before any remote
        call), held by this instance. None if another instance packed them all first, or
        if ``provider`` has ``max_jobs`` unfinished provider jobs across all instances."""
        created = await self._write(
            lambda em: batch_writes.create_batch(
                provider, item_ids, next_at, self.instance_id, self._clock() + self.lease_seconds, max_jobs
            )
        )
        if created is not None:
            self._held[created.batch_id] = created.lease_gen
        return created

    async def save_checkpoint(self, batch_id: str, data: Mapping[str, Any]) -> None:
        await self._change(lambda: batch_writes.save_checkpoint(batch_id, data), fence=batch_id)

    async def batch_submitted(self, batch_id: str, handle: Mapping[str, Any], *, next_at: float) -> None:
        await self._write(lambda em: batch_writes.batch_submitted(em, batch_id, handle, next_at), fence=batch_id)

    async def batch_polled(
        self, batch_id: str, *, running: bool, progress: float | None, next_at: float, poll_time: float
    ) -> list[str]:
        """Record a poll; returns the ids of jobs whose progress changed."""
        return await self._write(
            lambda em: batch_writes.batch_polled(em, batch_id, running, progress, next_at, poll_time), fence=batch_id
        )

    async def set_progress(self, job_ids: Iterable[str], progress: float, *, batch_id: str | None = None) -> None:
        ids = list(job_ids)
        await self._change(lambda: batch_writes.set_progress(ids, progress), fence=batch_id)

    async def emit_progress(self, job_id: str, *, batch_id: str | None = None) -> None:
        """A (rate-limited by the caller) progress event for a running job."""
        await self._write(lambda em: emit.emit_progress(em, job_id), fence=batch_id)

    async def batch_state(self, batch_id: str, state: BatchState, *, next_at: float | None = None) -> None:
        await self._change(lambda: batch_writes.batch_state(batch_id, state, next_at), fence=batch_id)

    async def batch_retry(self, batch_id: str, *, attempts: int, next_at: float, error: ErrorInfo) -> None:
        await self._change(lambda: batch_writes.batch_retry(batch_id, attempts, next_at, error), fence=batch_id)

    async def finish_items(
        self,
        outcomes: Sequence[ItemOutcome],
        *,
        batch_id: str | None = None,
        batch_state: BatchState | None = None,
        batch_error: ErrorInfo | None = None,
    ) -> None:
        """Commit item outcomes (and optionally close their provider job) with the events
        they cause. With ``batch_id``, only while this instance holds that provider job."""
        await self._write(
            lambda em: batch_writes.finish_items(em, outcomes, batch_id, batch_state, batch_error), fence=batch_id
        )
        if batch_id is not None and batch_state in (BatchState.DONE, BatchState.FAILED):
            self._held.pop(batch_id, None)

    async def attach_download(self, item_id: str, path: str, size: int, device: int, inode: int) -> None:
        """A URL input was downloaded: the item now has a local file and can be packed."""
        await self._change(lambda: batch_writes.attach_download(item_id, path, size, device, inode))

    async def release_items(self, batch_id: str, item_ids: Sequence[str]) -> None:
        """Return items to the queue (their provider job ended without them)."""
        await self._change(lambda: batch_writes.release_items(batch_id, item_ids))

    # -- cancel and corrections --------------------------------------------------------

    async def request_cancel(self, job_id: str) -> JobView | None:
        return await self._write(lambda em: intake_writes.request_cancel(job_id))

    async def save_edit(self, item_id: str, transcript: Mapping[str, Any] | None) -> None:
        """Store a correction (None: drop it, the engine's transcript counts again)."""
        await self._change(lambda: intake_writes.save_edit(item_id, transcript))

    # -- outbox ------------------------------------------------------------------------

    async def emit_for_existing(self, job_id: str) -> None:
        """Re-publish a job's current state (a repeated request_id gets the existing job's events)."""
        await self._write(lambda em: emit.emit_for_existing(em, job_id))

    async def add_event(
        self, event: JobEvent, *, reply_to: str | None = None, correlation_id: str | None = None
    ) -> None:
        """An event about something that is not a job row (e.g. a rejected request)."""
        if self._outbox:
            await self._write(lambda em: emit.add_event(em, event, reply_to, correlation_id))

    async def outbox_delete(self, seqs: Sequence[int]) -> None:
        await self._change(lambda: batch_writes.outbox_delete(seqs))

    async def finished_http_jobs(
        self, before: str, *, after: str = "", limit: int = 100, mine: bool = True
    ) -> list[FinishedJob]:
        """HTTP jobs that ended before ``before`` (an ISO time), by id after ``after``; with
        ``mine``, those this instance accepted (a lone journal's are all its own)."""
        instance = self.instance_id if mine and self.shared else None
        return await self._driver.run(lambda: retention.finished_http_jobs(before, instance, after, limit), write=False)

    async def forget_job(self, job_id: str) -> bool:
        """Delete a finished job's rows; False for one that is not finished or whose events wait."""
        return await self._change(lambda: retention.forget_job(job_id))
