"""Keeping this instance's leases on provider jobs, and taking over those of the dead.

Every third of ``lease_seconds`` the keeper renews the leases the journal holds for this
instance (a whole Whisper transcription or a Sarvam wait writes nothing for minutes, and
must not look dead meanwhile), hands the dispatcher those it lost (a pause, a database
away for longer than the lease: another instance has them now, and this one must stop
stepping them), and claims the unfinished provider jobs whose holder stopped renewing:
they continue here from their last checkpoint. Only providers this instance has are
claimed; the others wait for an instance that has them.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol, runtime_checkable

import structlog

from stenod.dispatch.dispatch_state import DispatchState
from stenod.journal import JobJournal

log = structlog.get_logger("stenod.leases")

_AFTER_EXPIRY_SECONDS = 0.05


@runtime_checkable
class LeaseMetrics(Protocol):
    def leases(self, held: int, *, claimed: int = 0, lost: int = 0) -> None: ...


class LeaseKeeper:
    def __init__(
        self,
        journal: JobJournal,
        state: DispatchState,
        *,
        metrics: LeaseMetrics | None = None,
    ) -> None:
        self._journal = journal
        self._state = state
        self._metrics = metrics
        self.interval = max(1.0, journal.lease_seconds / 3)

    async def claim(self, *, own: bool = False) -> int:
        """Take what is free: at start with ``own`` (this instance's jobs of before a restart
        come back at once), and every interval after. Returns how many were taken."""
        claimed = await self._journal.claim_batches(list(self._state.runtimes), own=own)
        for batch in claimed:
            log.info(
                "batch.claimed",
                batch_id=batch.batch_id,
                provider=batch.provider,
                state=str(batch.state),
                lease_gen=batch.lease_gen,
            )
            self._state.claimed(batch)
        if own and self._metrics is not None:
            self._metrics.leases(self._state.held, claimed=len(claimed))
        return len(claimed)

    async def run(self, stopping: asyncio.Event) -> None:
        if not self._journal.shared:
            return  # no other instance can take a job over, or leave one behind: nothing to keep
        loop = asyncio.get_running_loop()
        renew_at = loop.time() + self.interval
        expiry: float | None = None  # seconds until another instance's lease runs out
        while not stopping.is_set():
            # Wake to renew, or the moment a lease of another instance expires (a takeover
            # then comes within moments of the lease, not up to an interval later).
            wait = renew_at - loop.time()
            if expiry is not None:
                wait = min(wait, expiry + _AFTER_EXPIRY_SECONDS)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, wait)):
                    await stopping.wait()
            if stopping.is_set():
                return
            lost: list[str] = []
            if loop.time() >= renew_at:
                renew_at = loop.time() + self.interval
                lost = await self._journal.renew_leases()
            for batch_id in lost:
                log.warning(
                    "batch.lease_lost",
                    batch_id=batch_id,
                    hint="another instance took this provider job over while this one did not renew its "
                    "lease (paused, or the database was away); this one stops working on it",
                )
                self._state.lease_lost(batch_id)
            claimed = await self.claim()
            expiry = await self._journal.next_expiry(list(self._state.runtimes))
            if self._metrics is not None:
                self._metrics.leases(self._state.held, claimed=claimed, lost=len(lost))
