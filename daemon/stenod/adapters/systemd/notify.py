"""The systemd notify protocol (sd_notify(3)), spoken directly over ``$NOTIFY_SOCKET``.

Readiness, status lines, stop/reload notices and a health-gated watchdog, without a
libsystemd dependency: each notice is one datagram on an AF_UNIX socket. Outside systemd
(no ``$NOTIFY_SOCKET``) every method is a no-op, and no method ever raises into the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeAlias

import structlog

__all__ = ["HealthCheck", "SystemdNotifier"]

log = structlog.get_logger("stenod.systemd")

HealthCheck: TypeAlias = Callable[[], Awaitable[bool]]


class SystemdNotifier:
    """Sends sd_notify messages to the service manager that started this process.

    Created once by the composition root from the process environment; cheap to call
    from the event loop (one non-blocking ``sendto``). Every send method returns whether
    the message was handed to the socket, and logs instead of raising when it was not.
    """

    def __init__(self, environ: Mapping[str, str] | None = None, *, pid: int | None = None) -> None:
        """Read ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` from ``environ``.

        Args:
            environ: the environment to read (default ``os.environ``).
            pid: this process's id, for the ``WATCHDOG_PID`` check (default ``os.getpid()``).
        """
        env = os.environ if environ is None else environ
        self._address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self._watchdog_interval = _watchdog_interval(env, os.getpid() if pid is None else pid)

    @property
    def enabled(self) -> bool:
        """True when a notify socket is configured (running under systemd with Type=notify)."""
        return self._address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings (half of ``WatchdogSec=``), None without a watchdog."""
        return self._watchdog_interval

    def ready(self, status: str | None = None) -> bool:
        """Tell systemd start-up (or a reload) is complete: ``READY=1``, with an optional status."""
        return self.send("READY=1", *_status(status))

    def status(self, text: str) -> bool:
        """Set the one-line status shown by ``systemctl status``."""
        return self.send(*_status(text))

    def stopping(self, status: str | None = None) -> bool:
        """Tell systemd a graceful shutdown has begun: ``STOPPING=1``."""
        return self.send("STOPPING=1", *_status(status))

    def reloading(self) -> bool:
        """Tell systemd a configuration reload has begun; send :meth:`ready` when it is done.

        Carries ``MONOTONIC_USEC`` so it also satisfies ``Type=notify-reload`` (systemd ≥ 253).
        """
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for ``seconds`` more before the start (or stop) timeout fires, e.g. during a long recovery."""
        return self.send(f"EXTEND_TIMEOUT_USEC={max(0, round(seconds * 1_000_000))}")

    def ping(self) -> bool:
        """Send one ``WATCHDOG=1``. Prefer :meth:`watchdog`, which pings only while healthy."""
        return self.send("WATCHDOG=1")

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=value`` assignments as one datagram; False if not sent (logged, never raised)."""
        if self._address is None or not assignments:
            return False
        payload = "\n".join(assignments).encode("utf-8", "replace")
        try:
            # Non-blocking: a manager that stopped reading must not stall the event loop.
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK) as s:
                s.sendto(payload, self._address)
        except OSError as exc:
            log.warning("systemd.notify_failed", message=assignments[0], error=str(exc))
            return False
        return True

    async def watchdog(
        self, stopping: asyncio.Event, healthy: HealthCheck, *, check_timeout: float | None = None
    ) -> None:
        """Ping the watchdog every :attr:`watchdog_interval` seconds while ``healthy()`` says so.

        Runs on the event loop until ``stopping`` is set, so a blocked loop sends nothing and
        systemd restarts the service after ``WatchdogSec=``. A ping is withheld when
        ``healthy()`` returns False, raises, or takes longer than ``check_timeout`` (default:
        half the interval). Without a watchdog for this process it just waits for ``stopping``.
        """
        interval = self._watchdog_interval
        if interval is None or self._address is None:
            await stopping.wait()
            return
        timeout = interval / 2 if check_timeout is None else check_timeout
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        withheld = False
        while not stopping.is_set():
            reason = await _probe(healthy, timeout)
            if reason is None:
                self.ping()
                if withheld:
                    log.info("systemd.watchdog_resumed")
                withheld = False
            else:
                log.warning("systemd.watchdog_withheld", reason=reason)
                withheld = True
            # After a stall, restart the cadence from now rather than pinging in a burst.
            next_at = max(next_at + interval, loop.time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(next_at):
                    await stopping.wait()


async def _probe(healthy: HealthCheck, within: float) -> str | None:
    """None when ``healthy()`` answered True in time, else why the ping is withheld."""
    try:
        async with asyncio.timeout(within):
            return None if await healthy() else "health check failed"
    except TimeoutError:
        return f"health check did not answer within {within:g}s"
    except Exception as exc:  # a probe that crashes is itself the unhealthy signal the watchdog exists for
        log.warning("systemd.health_check_error", exc_info=True)
        return f"health check raised {type(exc).__name__}"


def _status(text: str | None) -> tuple[str, ...]:
    if text is None:
        return ()
    return ("STATUS=" + " ".join(text.split()),)  # one line: the protocol is newline-separated


def _socket_address(value: str) -> str | None:
    if value.startswith("@"):
        return "\0" + value[1:]  # abstract namespace
    if value.startswith("/"):
        return value
    if value:
        # e.g. vsock: (systemd ≥ 254); datagram AF_UNIX is all this module speaks.
        log.warning("systemd.notify_socket_unsupported", notify_socket=value)
    return None


def _watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Half of WATCHDOG_USEC, the way sd_watchdog_enabled(3) reads it; None when not for us."""
    watchdog_pid = env.get("WATCHDOG_PID")
    if watchdog_pid and watchdog_pid.strip() != str(pid):
        return None  # the watchdog belongs to another process (e.g. our parent)
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2_000_000 if usec > 0 else None
