"""Broker outages: a restart in the middle of 200 jobs, and a daemon started while the broker is away."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path
from typing import Any

import aio_pika
from pydantic import SecretStr

from stenod.adapters.amqp.topology import declare_events
from stenod.settings import AmqpSettings
from support.amqp import (
    BROKER_URL,
    BrokerDoor,
    BrokerNames,
    Client,
    broker_stopped,
    connect,
    created_jobs,
    queue_daemon,
)
from support.harness import wait_for
from tests.journal_rows import rows

JOBS = 200


def _watch_queue(names: BrokerNames) -> str:
    """A durable queue bound to the event exchange: it keeps events across a broker restart."""
    name = f"{names.prefix}.watch"
    conn = connect()
    try:
        ch = conn.channel()
        ch.queue_declare(name, durable=True)
        ch.queue_bind(name, names.events, "job.#")
    finally:
        conn.close()
    return name


def _delete_queue(name: str) -> None:
    conn = connect()
    try:
        conn.channel().queue_delete(name)
    finally:
        conn.close()


def _publish(names: BrokerNames, roots: Path, ids: range) -> None:
    client = Client(names)
    try:
        for i in ids:
            client.publish({"request_id": f"r-{i:03d}", "inputs": [{"path": str(roots / f"{i:03d}.wav")}]})
    finally:
        client.close()


def _jobs_per_request(state: Path) -> dict[str, int]:
    return dict(rows(state, "SELECT request_id, COUNT(*) FROM jobs GROUP BY request_id"))


def _outbox_depth(state: Path) -> int:
    return int(rows(state, "SELECT COUNT(*) FROM outbox")[0][0])


def test_broker_restart_in_the_middle_of_200_jobs_loses_nothing_and_runs_nothing_twice(tmp_path):
    with queue_daemon(tmp_path, "broker-restart") as q:
        for i in range(JOBS):
            (q.roots / f"{i:03d}.wav").write_bytes(f"audio {i}".encode())
        watch = _watch_queue(q.names)
        try:
            _publish(q.names, q.roots, range(JOBS // 2))
            with broker_stopped():
                q.client.close()  # its connection is gone with the broker anyway
            _publish(q.names, q.roots, range(JOBS // 2, JOBS))

            client = Client(q.names)
            by_request: dict[str, dict[str, str]] = defaultdict(dict)  # request_id -> {event id: state}

            def all_done(events: list[dict[str, Any]]) -> bool:
                for e in events:
                    by_request[e["data"]["request_id"]][e["id"]] = e["data"]["state"]
                return sum("succeeded" in states.values() for states in by_request.values()) == JOBS

            client.events(watch, all_done, timeout=180)
            wait_for(lambda: _outbox_depth(tmp_path / "state") == 0, "the outbox to drain", timeout=60)
            client.close()
        finally:
            _delete_queue(watch)
        assert q.daemon.alive
    expected = {f"r-{i:03d}" for i in range(JOBS)}
    assert set(by_request) == expected  # no request lost
    for request_id, states in by_request.items():
        assert {"accepted", "submitted", "succeeded"} <= set(states.values()), (request_id, states)
    per_request = _jobs_per_request(tmp_path / "state")
    assert set(per_request) == expected and set(per_request.values()) == {1}  # one job per request
    assert len(created_jobs(tmp_path)) == JOBS  # the provider ran each job exactly once


async def _declare_event_exchange(names: BrokerNames) -> None:
    connection = await aio_pika.connect(BROKER_URL)
    async with connection:
        channel = await connection.channel()
        await declare_events(channel, AmqpSettings(url=SecretStr(BROKER_URL), event_exchange=names.events))


def test_daemon_started_while_the_broker_is_away_does_folder_work_and_connects_when_it_returns(tmp_path):
    door = BrokerDoor()  # closed: nothing listens on its port yet
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with queue_daemon(
        tmp_path,
        "broker-away",
        url=door.url,
        wait=False,
        watch=[{"path": inbox, "provider": "echo", "settle_seconds": 0.2}],
    ) as q:
        wait_for(lambda: q.daemon.named("amqp.unreachable"), "the daemon to notice the broker is away", timeout=30)
        (inbox / "memo.wav").write_bytes(b"recorded while the broker was down")
        wait_for(lambda: (inbox / "memo.txt").exists(), "the folder job to finish without a broker", timeout=60)
        assert _outbox_depth(tmp_path / "state") >= 2  # its events wait in the outbox

        asyncio.run(_declare_event_exchange(q.names))
        watch = _watch_queue(q.names)
        try:
            door.open()
            q.wait_consuming(timeout=30)
            client = Client(q.names)
            folder_events = client.events(watch, lambda got: any(e["data"]["state"] == "succeeded" for e in got))
            (q.roots / "call.wav").write_bytes(b"audio")
            client.publish({"request_id": "r-after", "inputs": [{"path": str(q.roots / "call.wav")}]})
            queue_events = client.events(
                watch,
                lambda got: any(
                    e["data"]["request_id"] == "r-after" and e["data"]["state"] == "succeeded" for e in got
                ),
            )
            client.close()
        finally:
            door.close()
            _delete_queue(watch)
    assert folder_events[0]["data"]["state"] == "accepted"
    assert folder_events[-1]["data"]["items"][0]["input"] == str(inbox / "memo.wav")
    assert queue_events[-1]["data"]["items"][0]["transcript"]["text"] == "echo call.wav 5 bytes"
