"""The sd_notify protocol against a real AF_UNIX datagram socket bound by the test."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import socket
import struct
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from structlog.testing import capture_logs

from stenod.adapters.systemd.notify import HealthCheck, SystemdNotifier

# Not exported by the socket module; the asm-generic value (x86-64, arm64).
SO_TIMESTAMPNS = 35


class NotifyReceiver:
    """Plays systemd's side: binds the socket and records (send time, message) from a thread.

    Times are the kernel's enqueue timestamps (``time.time()`` clock), so they do not depend
    on when this thread gets to run; a thread, so messages are read while the loop is blocked.
    """

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.bind(address)
        self.sock.settimeout(0.05)
        self.received: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(16))
            except TimeoutError:
                continue
            sent = time.time()
            for level, kind, value in ancillary:
                if (level, kind) == (socket.SOL_SOCKET, SO_TIMESTAMPNS):
                    seconds, nanoseconds = struct.unpack("qq", value[:16])
                    sent = seconds + nanoseconds / 1e9
            with self._lock:
                self.received.append((sent, data.decode()))

    def messages(self) -> list[str]:
        with self._lock:
            return [message for _, message in self.received]

    def pings(self) -> list[float]:
        with self._lock:
            return [at for at, message in self.received if message == "WATCHDOG=1"]

    def clear(self) -> None:
        with self._lock:
            self.received.clear()

    def wait_for(self, message: str, timeout: float = 5.0) -> bool:
        return self.first(lambda m: m == message, timeout) is not None

    def first(self, predicate: Callable[[str], bool], timeout: float = 5.0) -> str | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if found := next((m for m in self.messages() if predicate(m)), None):
                return found
            time.sleep(0.01)
        return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifyReceiver]:
    # A short directory: AF_UNIX paths are limited to 107 bytes, pytest's tmp_path can exceed that.
    directory = tempfile.mkdtemp(prefix="sdn-")
    path = os.path.join(directory, "notify")
    rx = NotifyReceiver(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield rx
    rx.close()
    shutil.rmtree(directory)


def watchdog_env(monkeypatch: pytest.MonkeyPatch, usec: int) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", str(usec))
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))


def test_ready_sends_ready_1(receiver: NotifyReceiver) -> None:
    assert SystemdNotifier().ready()
    assert receiver.wait_for("READY=1")


def test_ready_with_status_sends_both_in_one_datagram(receiver: NotifyReceiver) -> None:
    SystemdNotifier().ready(status="ready: 0 jobs in flight, queue off")
    assert receiver.wait_for("READY=1\nSTATUS=ready: 0 jobs in flight, queue off")


def test_status_is_flattened_to_one_line(receiver: NotifyReceiver) -> None:
    SystemdNotifier().status("3 jobs in flight\nqueue: waiting for broker")
    assert receiver.wait_for("STATUS=3 jobs in flight queue: waiting for broker")


def test_stopping_sends_stopping_1(receiver: NotifyReceiver) -> None:
    SystemdNotifier().stopping()
    assert receiver.wait_for("STOPPING=1")


def test_reloading_carries_the_monotonic_clock(receiver: NotifyReceiver) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    SystemdNotifier().reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    message = receiver.first(lambda m: m.startswith("RELOADING=1"))
    assert message is not None
    reloading, monotonic = message.split("\n")
    assert reloading == "RELOADING=1"
    key, value = monotonic.split("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_extend_timeout_is_sent_in_microseconds(receiver: NotifyReceiver) -> None:
    SystemdNotifier().extend_timeout(2.5)
    assert receiver.wait_for("EXTEND_TIMEOUT_USEC=2500000")


def test_abstract_socket_address_is_supported(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"stenod-test-{uuid.uuid4().hex}"
    rx = NotifyReceiver("\0" + name)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        SystemdNotifier().ready()
        assert rx.wait_for("READY=1")
    finally:
        rx.close()


def test_without_notify_socket_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = SystemdNotifier()
    assert not notifier.enabled
    assert not notifier.ready()


def test_unreachable_socket_is_logged_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/nonexistent/stenod/notify")
    with capture_logs() as logs:
        sent = SystemdNotifier().ready()
    assert not sent
    assert [entry["event"] for entry in logs] == ["systemd.notify_failed"]


def test_a_manager_that_stops_reading_does_not_block_the_sender(monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tempfile.mkdtemp(prefix="sdn-")
    path = os.path.join(directory, "notify")
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # bound, never read: its queue fills up
    silent.bind(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    notifier = SystemdNotifier()
    results: list[bool] = []

    def flood() -> None:
        with capture_logs():
            results.extend(notifier.status(f"message {i}") for i in range(5000))

    try:
        sender = threading.Thread(target=flood, daemon=True)
        sender.start()
        sender.join(timeout=30)  # a liveness bound: a blocking send would hang here for good
        assert not sender.is_alive()
        assert False in results
    finally:
        silent.close()
        shutil.rmtree(directory)


def test_watchdog_interval_is_half_of_watchdog_usec(receiver: NotifyReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    watchdog_env(monkeypatch, 30_000_000)
    assert SystemdNotifier().watchdog_interval == 15.0


def test_watchdog_meant_for_another_process_is_ignored(
    receiver: NotifyReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert SystemdNotifier().watchdog_interval is None


async def _always_healthy() -> bool:
    return True


async def _run_watchdog(notifier: SystemdNotifier, seconds: float, healthy: HealthCheck = _always_healthy) -> float:
    stopping = asyncio.Event()
    task = asyncio.create_task(notifier.watchdog(stopping, healthy))
    started = time.time()
    await asyncio.sleep(seconds)
    stopping.set()
    await asyncio.wait_for(task, timeout=5)
    await asyncio.sleep(0.1)  # let the receiver thread read the last datagrams
    return time.time() - started


async def test_watchdog_pings_at_half_the_watchdog_period(
    receiver: NotifyReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    watchdog_env(monkeypatch, 200_000)  # WatchdogSec=0.2s: a ping every 0.1 s
    elapsed = await _run_watchdog(SystemdNotifier(), 1.0)
    pings = receiver.pings()
    # A cadence bound, not a speed test: never more often than every interval, and repeatedly.
    assert 3 <= len(pings) <= elapsed / 0.1 + 2
    assert min(b - a for a, b in itertools.pairwise(pings)) >= 0.05


async def test_watchdog_without_watchdog_usec_sends_nothing_and_stops(receiver: NotifyReceiver) -> None:
    await _run_watchdog(SystemdNotifier(), 0.3)
    assert receiver.pings() == []


async def test_unhealthy_check_withholds_pings_until_healthy_again(
    receiver: NotifyReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    watchdog_env(monkeypatch, 200_000)
    healthy = True

    async def check() -> bool:
        return healthy

    stopping = asyncio.Event()
    task = asyncio.create_task(SystemdNotifier().watchdog(stopping, check))
    try:
        assert await asyncio.to_thread(receiver.wait_for, "WATCHDOG=1")
        healthy = False
        await asyncio.sleep(0.15)  # let a check already past its gate deliver its ping
        receiver.clear()
        await asyncio.sleep(0.6)
        assert receiver.pings() == []
        healthy = True
        assert await asyncio.to_thread(receiver.wait_for, "WATCHDOG=1")
    finally:
        stopping.set()
        await asyncio.wait_for(task, timeout=5)


async def test_health_check_that_does_not_answer_withholds_pings(
    receiver: NotifyReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    watchdog_env(monkeypatch, 200_000)

    async def hangs() -> bool:
        await asyncio.Event().wait()
        return True

    with capture_logs() as logs:
        await _run_watchdog(SystemdNotifier(), 0.6, hangs)
    assert receiver.pings() == []
    assert any(e["event"] == "systemd.watchdog_withheld" and "did not answer" in e["reason"] for e in logs)


async def test_health_check_that_raises_withholds_pings(
    receiver: NotifyReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    watchdog_env(monkeypatch, 200_000)

    async def broken() -> bool:
        raise RuntimeError("sqlite writer thread is gone")

    with capture_logs():
        await _run_watchdog(SystemdNotifier(), 0.5, broken)
    assert receiver.pings() == []


async def test_blocked_event_loop_sends_no_pings_until_it_runs_again(
    receiver: NotifyReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    watchdog_env(monkeypatch, 200_000)
    stopping = asyncio.Event()
    task = asyncio.create_task(SystemdNotifier().watchdog(stopping, _always_healthy))
    try:
        assert await asyncio.to_thread(receiver.wait_for, "WATCHDOG=1")
        blocked_from = time.time()
        time.sleep(0.8)  # noqa: ASYNC251 -- blocking the loop on purpose, as a stuck synchronous call would
        blocked_until = time.time()
        await asyncio.sleep(0.35)
    finally:
        stopping.set()
        await asyncio.wait_for(task, timeout=5)
    during = [at for at in receiver.pings() if blocked_from < at < blocked_until]
    assert during == []
    assert any(at >= blocked_until for at in receiver.pings())
