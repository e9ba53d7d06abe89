"""Test hooks for the moments a test cannot hit from outside: a test names a point in the
environment and the daemon does there what the world might do to it at that moment.
Nothing happens unless a variable names the point.

- ``STENOD_FAULT_SIGTERM_AT``: a point of start-up; the daemon sends itself SIGTERM there,
  as ``systemctl stop`` would at that moment.
- ``STENOD_FAULT_PAUSE_AT``: the daemon stops itself (SIGSTOP, the whole process, as a
  frozen VM or a debugger would) the first time it passes the point, until a SIGCONT.
"""

from __future__ import annotations

import os
import signal
from typing import Final

__all__ = [
    "EXITING",
    "OUTPUTS",
    "OUTPUTS_WRITTEN",
    "PAUSE_AT",
    "REQUEST_DELIVERED",
    "SIGTERM_AT",
    "STARTUP_POINTS",
    "pause_at",
    "sigterm_at",
]

SIGTERM_AT: Final = "STENOD_FAULT_SIGTERM_AT"
PAUSE_AT: Final = "STENOD_FAULT_PAUSE_AT"

STARTUP_POINTS: Final = (
    "daemon.building",  # before the journal, providers and sources are built
    "daemon.starting",  # built; the sources, relay and dispatcher are about to start
    "amqp.connected",  # the consumer has its broker connection
    "amqp.consume",  # the request queue is declared; Basic.Consume is about to be sent
)
EXITING: Final = "daemon.exiting"  # the loop has ended; the process is about to exit
OUTPUTS: Final = "outputs"  # a provider job's lease renewed; its output files not yet written
OUTPUTS_WRITTEN: Final = "outputs.written"  # a provider job's output files written, not yet recorded
REQUEST_DELIVERED: Final = "amqp.delivered"  # a request delivered by the broker, not yet recorded


def sigterm_at(point: str) -> None:
    """SIGTERM to this process if the test asked for it at ``point`` (handled by the loop's
    signal handler at its next turn, like a real one arriving here)."""
    if os.environ.get(SIGTERM_AT) == point:
        os.kill(os.getpid(), signal.SIGTERM)


def pause_at(point: str) -> None:
    """SIGSTOP to this process, once, if the test asked for it at ``point``."""
    if os.environ.get(PAUSE_AT) == point:
        del os.environ[PAUSE_AT]  # once: the next pass (another job) goes on
        os.kill(os.getpid(), signal.SIGSTOP)
