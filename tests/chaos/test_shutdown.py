"""Found by the chaos rig: a SIGTERM that arrives while the broker connection has been
flapping and is down never finished (the consumer's cancel waited for a reconnect that
could not come), so systemd would have had to SIGKILL the daemon at TimeoutStopSec."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.amqp_support import BrokerNames, Client, delete_topology, queue_config
from tests.chaos.broker import Door
from tests.e2e.harness import Daemon, wait_for

STOP_SECONDS = 30.0  # shutdown_grace_seconds is 5 in this config: 30 s only means "it hangs"


@pytest.mark.parametrize("seed", [1])
def test_sigterm_while_a_flapping_broker_connection_is_down_still_stops_the_daemon(
    tmp_path: Path, echo_plugin: None, seed: int
) -> None:
    rng = random.Random(seed)
    names = BrokerNames.new("sigterm-flapping")
    door = Door()
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
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGTERM)
        try:
            code = daemon.proc.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the daemon did not stop within {STOP_SECONDS:.0f} s of SIGTERM")
        assert code == 0
        assert daemon.named("daemon.stopped", since_start=True)
    finally:
        daemon.kill()
        client.close()
        door.close()
        delete_topology(names)
