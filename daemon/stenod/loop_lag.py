"""How late the event loop wakes a sleeping task: the "loop responsive" health check."""

from __future__ import annotations

import asyncio
import contextlib

import structlog

__all__ = ["LoopLagMonitor"]

log = structlog.get_logger("stenod.health")


class LoopLagMonitor:
    """Measures how late the event loop wakes a sleeping task: a "loop responsive" check.

    Run :meth:`run` as a task; :meth:`responsive` is a :data:`Check` for ``/healthz`` and
    the watchdog's health gate. A loop blocked by synchronous work shows up as lag.
    """

    def __init__(self, *, interval: float = 0.5, max_lag: float = 1.0) -> None:
        """Sample every ``interval`` seconds; lag above ``max_lag`` seconds is unresponsive."""
        self._interval = interval
        self._max_lag = max_lag
        self.lag = 0.0

    async def run(self, stopping: asyncio.Event) -> None:
        """Sample the loop's lag until ``stopping`` is set."""
        loop = asyncio.get_running_loop()
        while not stopping.is_set():
            expected = loop.time() + self._interval
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(expected):
                    await stopping.wait()
            self.lag = max(0.0, loop.time() - expected)
            if self.lag > self._max_lag:
                log.warning("health.loop_lag", lag_seconds=round(self.lag, 3))

    async def responsive(self) -> bool:
        """True when the last measured lag was within ``max_lag``."""
        return self.lag <= self._max_lag
