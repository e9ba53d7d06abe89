"""Found by the chaos rig: a SIGTERM that arrives while the broker connection has been
flapping and is down never finished (the consumer's cancel waited for a reconnect that
could not come), so systemd would have had to SIGKILL the daemon at TimeoutStopSec."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from stenod.adapters.amqp.source import AmqpSource
from stenod.adapters.amqp.topology import BrokerLink, request_queue_arguments
from stenod.adapters.downloads.url_policy import UrlPolicy
from stenod.adapters.folders.local_inputs import LocalInputs
from stenod.adapters.sqlite.journal import SqliteJournal
from stenod.dispatch.stepper import ProviderRuntime
from stenod.fault_points import EXITING, SIGTERM_AT, STARTUP_POINTS
from stenod.intake.request_intake import RequestIntake
from stenod.settings import AmqpSettings
from support.amqp import BrokerDoor, BrokerNames, Client, connect, delete_topology, queue_config
from support.harness import Daemon, wait_for
from tests.fakes.scripted import ScriptedProvider

STOP_SECONDS = 30.0  # shutdown_grace_seconds is 5 in this config: 30 s only means "it hangs"


@pytest.mark.parametrize("seed", [1])
def test_sigterm_while_a_flapping_broker_connection_is_down_still_stops_the_daemon(
    tmp_path: Path, echo_plugin: None, seed: int
) -> None:
    rng = random.Random(seed)
    names = BrokerNames.new("sigterm-flapping")
    door = BrokerDoor()
    door.open()
    daemon = Daemon(queue_config(tmp_path, names, url=door.url), tmp_path / "daemon.log").start()
    client = Client(names)
    try:
        daemon.wait_ready()
        wait_for(lambda: daemon.named("amqp.consuming", since_start=True), "the consumer")
        audio = tmp_path / "roots" / "a.wav"
        audio.write_bytes(b"audio")
        for n in range(50):
            client.publish(json.dumps({"request_id": f"r{n}", "inputs": [{"path": str(audio)}]}).encode())
        for cut in range(8):
            door.close()
            time.sleep(rng.uniform(0.1, 1.5))
            door.open()
            time.sleep(rng.uniform(0.05, 2.0))
            for n in range(20):
                client.publish(json.dumps({"request_id": f"r{cut}-{n}", "inputs": [{"path": str(audio)}]}).encode())
        door.close()
        time.sleep(rng.uniform(0.0, 2.5))
        daemon.process.send_signal(signal.SIGTERM)
        try:
            code = daemon.process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the daemon did not stop within {STOP_SECONDS:.0f} s of SIGTERM")
        assert code == 0
        assert daemon.named("daemon.stopped", since_start=True)
    finally:
        daemon.kill()
        client.close()
        door.close()
        delete_topology(names)


async def test_requests_delivered_after_sigterm_are_left_for_the_next_daemon(tmp_path: Path) -> None:
    """Found by the 32-minute chaos run: a SIGTERM that came while the consumer was starting
    was followed by ``amqp.consuming`` and new jobs. A delivery that arrives once stopping has
    begun is not started; it goes back to the queue with the channel. Here the first accepted
    job sets ``stopping`` (prefetch 1): exactly one job, the other requests stay queued."""
    names = BrokerNames.new("stop-intake")
    roots = tmp_path / "roots"
    roots.mkdir()
    (roots / "a.wav").write_bytes(b"audio")
    amqp = AmqpSettings(**names.amqp_section(allowed_roots=[roots], prefetch=1))
    journal = SqliteJournal.open(tmp_path / "journal.db")
    provider = ScriptedProvider()
    runtimes = {"scripted": ProviderRuntime("scripted", provider, provider.limits, 0.0, 4)}
    stopping = asyncio.Event()
    link = BrokerLink(amqp)
    intake = RequestIntake(
        journal,
        LocalInputs(amqp.allowed_roots, UrlPolicy()),
        lambda: (runtimes, {}),
        default_provider="scripted",
        max_body_bytes=amqp.max_body_bytes,
    )
    source = AmqpSource(link, intake, amqp, notify=stopping.set, grace_seconds=5)
    conn = connect()
    try:
        conn.channel().queue_declare(names.requests, durable=True, arguments=request_queue_arguments(amqp))
        client = Client(names)
        for n in range(10):
            client.publish({"request_id": f"r{n}", "inputs": [{"path": str(roots / "a.wav")}]})
        client.close()
        async with asyncio.timeout(30), asyncio.TaskGroup() as tg:
            tg.create_task(link.run(stopping))
            tg.create_task(source.run(stopping))
        await link.aclose()
        assert [v.request_id for v in await journal.jobs()] == ["r0"]
        waiting = conn.channel().queue_declare(names.requests, passive=True).method.message_count
        assert waiting == 9
    finally:
        intake.close()
        journal.close()
        conn.close()
        delete_topology(names)


@pytest.mark.parametrize("point", STARTUP_POINTS)
def test_a_sigterm_at_any_point_of_start_up_starts_no_consumer_and_takes_no_request(tmp_path: Path, point: str) -> None:
    """Found by the cluster chaos run (seed 368875535): a SIGTERM that came while the
    consumer was being started (``dispatcher.draining``) was followed by ``amqp.consuming``
    1 ms later. The daemon sends itself SIGTERM at each point of its start-up; a request
    waits in the queue from before. It must stop (exit 0), never say it consumes, and leave
    the request in the queue for the next daemon."""
    names = BrokerNames.new(f"sigterm-start-{point}")
    config = queue_config(tmp_path, names)
    (tmp_path / "roots" / "a.wav").write_bytes(b"audio")
    amqp = AmqpSettings(**names.amqp_section(allowed_roots=[tmp_path / "roots"]))
    conn = connect()
    daemon = Daemon(config, tmp_path / "daemon.log", env={SIGTERM_AT: point})
    try:
        conn.channel().queue_declare(names.requests, durable=True, arguments=request_queue_arguments(amqp))
        client = Client(names)
        client.publish({"request_id": "r0", "inputs": [{"path": str(tmp_path / "roots" / "a.wav")}]})
        client.close()
        daemon.start()
        try:
            code = daemon.process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the daemon did not stop within {STOP_SECONDS:.0f} s of a SIGTERM at {point}")
        events = [e.get("event") for e in daemon.events()]
        assert (code, "amqp.consuming" in events) == (0, False), events
        assert not daemon.named("job.accepted")
        waiting = conn.channel().queue_declare(names.requests, passive=True).method.message_count
        assert waiting == 1
    finally:
        daemon.kill()
        conn.close()
        delete_topology(names)


def test_a_sigterm_while_the_daemon_is_already_exiting_leaves_its_exit_code_alone(tmp_path: Path) -> None:
    """Found by a cluster chaos run (seed 2136697420): a daemon exiting 1 (a journal commit in
    doubt) was paused, then sent SIGTERM; once its loop had closed, nothing handled the
    signal and it died of it (-15) instead of exiting with its code. Here a stopping daemon
    gets a second SIGTERM at that point (``daemon.exiting``): it still exits 0."""
    names = BrokerNames.new("sigterm-exiting")
    daemon = Daemon(queue_config(tmp_path, names), tmp_path / "daemon.log", env={SIGTERM_AT: EXITING})
    try:
        daemon.start().wait_ready()
        daemon.process.send_signal(signal.SIGTERM)
        assert daemon.process.wait(timeout=STOP_SECONDS) == 0
    finally:
        daemon.kill()
        delete_topology(names)
