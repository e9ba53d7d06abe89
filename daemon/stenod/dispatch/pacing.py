"""When a provider may be called again: backoff after a failed call, and provider pauses.

A provider that answered a call with "too many requests, try again in N seconds" gets no
call from this daemon until then, for any of its provider jobs, nor from any other daemon
sharing the journal.

The answer is about the account (every instance uses the same API key), not about the
one provider job whose call got it; polling the others meanwhile would earn more of the
same answers and, with some providers, a longer ban. The pause is written to the journal;
an instance sharing it reads the pauses before it starts steps, at most every
``fresh_seconds``, so it holds back within that time of the answer.
"""

from __future__ import annotations

import math
import random
import time

import structlog

from stenod.journal import JobJournal
from stenod.settings import RetrySettings

__all__ = ["ProviderPauses", "backoff_delay"]

log = structlog.get_logger("stenod.dispatcher")


class ProviderPauses:
    """Until when each provider is to be left alone (``time.time()`` seconds)."""

    def __init__(self, journal: JobJournal, *, fresh_seconds: float = 0.5) -> None:
        self._journal = journal
        self._fresh = fresh_seconds
        self._until: dict[str, float] = {}
        self._read_at = -math.inf  # monotonic time of the last read of the journal's pauses

    def until(self, provider: str) -> float | None:
        """When the provider may be called again; None: now."""
        until = self._until.get(provider)
        return until if until is not None and until > time.time() else None

    async def pause(self, provider: str, seconds: float) -> None:
        """The provider asked to be left alone for ``seconds``: by this instance at once,
        by the others sharing the journal at their next read."""
        self._hold(provider, time.time() + seconds)
        await self._journal.pause_provider(provider, seconds)
        log.warning(
            "provider.paused",
            seconds=round(seconds, 1),
            hint="the provider asked to be called again later; no call to it from any instance until then",
        )

    async def refresh(self) -> None:
        """Learn the pauses other instances wrote. A lone daemon reads them once, at start
        (what it wrote before a restart); its own it knows."""
        if self._read_at > -math.inf and (not self._journal.shared or time.monotonic() - self._read_at < self._fresh):
            return
        self._read_at = time.monotonic()
        now = time.time()
        for provider, seconds in (await self._journal.provider_pauses()).items():
            self._hold(provider, now + seconds)

    def _hold(self, provider: str, until: float) -> None:
        self._until[provider] = max(until, self._until.get(provider, 0.0))


def backoff_delay(attempt: int, policy: RetrySettings, retry_after: float | None) -> float:
    """Exponential backoff with equal jitter; Retry-After, when given, is a floor."""
    cap = min(policy.max_seconds, policy.base_seconds * 2 ** max(0, attempt - 1))
    delay: float = cap / 2 + random.uniform(0, cap / 2)
    if retry_after is not None:
        delay = max(retry_after, min(delay, retry_after + policy.base_seconds))
        delay += random.uniform(0, min(1.0, retry_after * 0.1))
    return delay
