"""The relay process (a child of ``stenod run``): restarted when it dies, gone when the daemon
is, finishing its batch on a graceful stop; events are never lost on the way."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import psutil

from support.amqp import QueueDaemon, queue_daemon
from support.harness import wait_for
from tests.journal_rows import rows


def _relay(q: QueueDaemon) -> psutil.Process:
    (child,) = [
        c
        for c in psutil.Process(q.daemon.process.pid).children()
        if "stenod.adapters.amqp.relay_worker" in " ".join(c.cmdline())
    ]
    return child


def _outbox_depth(state: Path) -> int:
    return int(rows(state, "SELECT COUNT(*) FROM outbox")[0][0])


def _request(q: QueueDaemon, n: int) -> None:
    audio = q.roots / f"{n}.wav"
    audio.write_bytes(b"RIFF")
    q.client.publish({"request_id": f"r-{n}", "inputs": [{"path": str(audio)}]})


def _succeeded(events: list[dict[str, Any]]) -> set[str]:
    return {e["data"]["request_id"] for e in events if e["type"] == "stenod.job.succeeded"}


def test_a_relay_process_that_dies_is_restarted_and_no_event_is_lost(tmp_path, journal_backend):
    with queue_daemon(tmp_path, "relay-dies") as q:
        events = q.client.bind_events()
        _request(q, 1)
        q.client.events(events, lambda got: _succeeded(got) == {"r-1"})
        first = _relay(q)
        first.kill()
        for n in range(2, 12):  # committed while no relay runs: they wait in the outbox
            _request(q, n)
        wait_for(lambda: q.daemon.named("amqp.relay_exited"), "the daemon to notice", 30)
        got = q.client.events(events, lambda got: _succeeded(got) >= {f"r-{n}" for n in range(2, 12)}, timeout=60)
        assert _relay(q).pid != first.pid
        assert q.daemon.alive
        wait_for(lambda: _outbox_depth(tmp_path / "state") == 0, "confirmed rows deleted", 30)
        accepted = {e["data"]["request_id"] for e in got if e["type"] == "stenod.job.accepted"}
        assert accepted >= {f"r-{n}" for n in range(2, 12)}


def test_the_relay_process_leaves_with_a_killed_daemon(tmp_path):
    with queue_daemon(tmp_path, "relay-orphan") as q:
        child = _relay(q)
        q.daemon.kill()
        child.wait(timeout=10)  # it reads end-of-file on stdin and exits
        assert not child.is_running()


def test_a_graceful_stop_publishes_what_the_relay_holds_and_exits_0(tmp_path):
    with queue_daemon(tmp_path, "relay-stop") as q:
        events = q.client.bind_events()
        for n in range(20):
            _request(q, n)
        q.client.events(events, lambda got: len(_succeeded(got)) == 20, timeout=60)
        child = _relay(q)
        os.kill(q.daemon.process.pid, signal.SIGTERM)
        assert q.daemon.process.wait(timeout=30) == 0
        child.wait(timeout=10)
        assert _outbox_depth(tmp_path / "state") == 0
        lines = q.daemon.log_path.read_text()
        assert '"amqp.relay_stop_timeout"' not in lines and '"amqp.relay_exited"' not in lines
