"""A request runs once, whatever the broker redelivers: repeated request_id, kill -9 before the ack."""

from __future__ import annotations

import subprocess
from pathlib import Path

from stenod.adapters.amqp.source import FAULT_EXIT_AFTER_COMMIT
from support.amqp import created_jobs, queue_daemon, rabbitmqctl_argv
from support.harness import wait_for
from tests.journal_rows import rows


def _jobs(state_dir: Path, request_id: str) -> list[tuple[str, str]]:
    return rows(state_dir, "SELECT id, state FROM jobs WHERE request_id = ?", (request_id,))


def _messages_in(queue: str) -> int:
    """Ready plus unacknowledged messages, as the broker counts them."""
    out = subprocess.run(
        rabbitmqctl_argv("list_queues", "name", "messages"), capture_output=True, text=True, check=True, timeout=60
    ).stdout
    counts = dict(line.split("\t") for line in out.splitlines() if "\t" in line)
    return int(counts[queue])


def test_the_same_request_id_published_twice_gives_one_job(tmp_path, journal_backend):
    with queue_daemon(tmp_path, "same-request-id") as q:
        (q.roots / "a.wav").write_bytes(b"audio")
        events_queue = q.client.bind_events()
        request = {"request_id": "r-twice", "inputs": [{"path": str(q.roots / "a.wav")}]}
        q.client.publish(request)
        q.client.publish(request)
        wait_for(lambda: q.daemon.named("amqp.request_seen"), "the second message to be handled", timeout=30)
        events = q.client.events(events_queue, lambda got: any(e["data"]["state"] == "succeeded" for e in got))
    assert len(_jobs(tmp_path / "state", "r-twice")) == 1
    assert len(created_jobs(tmp_path)) == 1
    assert {e["subject"] for e in events} == {events[0]["subject"]}


def test_kill_9_between_commit_and_ack_does_not_create_a_second_job(tmp_path, journal_backend):
    with queue_daemon(tmp_path, "crash-before-ack", env={FAULT_EXIT_AFTER_COMMIT: "1"}) as q:
        (q.roots / "a.wav").write_bytes(b"audio")
        events_queue = q.client.bind_events()
        q.client.publish({"request_id": "r-crash", "inputs": [{"path": str(q.roots / "a.wav")}]})
        assert q.daemon.process.wait(timeout=30) == 99  # died right after the commit, before the ack
        assert [state for _, state in _jobs(tmp_path / "state", "r-crash")] == ["accepted"]

        q.restart()  # without the fault hook: the broker redelivers the unacked message
        events = q.client.events(events_queue, lambda got: any(e["data"]["state"] == "succeeded" for e in got))
        wait_for(lambda: _messages_in(q.names.requests) == 0, "the request queue to be empty", timeout=30)
    assert len(_jobs(tmp_path / "state", "r-crash")) == 1
    assert len(created_jobs(tmp_path)) == 1
    assert {e["subject"] for e in events} == {_jobs(tmp_path / "state", "r-crash")[0][0]}
    assert q.daemon.named("amqp.request_seen", since_start=True)[0]["redelivered"] is True
