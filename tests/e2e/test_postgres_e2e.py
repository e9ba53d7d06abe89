"""A daemon whose journal is in PostgreSQL, when the database goes away (a door between
the two, closed: the daemon's connections cut with an RST, new ones refused). Several
daemons on one database: ``test_cluster.py``."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.amqp import BrokerDoor
from support.harness import STENOD, Daemon, running, wait_for, write_config
from support.postgres import fresh_database
from support.server import free_port


@pytest.fixture
def database(clean_env) -> Iterator[str]:
    with fresh_database() as url:
        yield url


@pytest.fixture
def door():
    d = BrokerDoor(target=("127.0.0.1", 5432))
    d.open()
    yield d
    d.close()


def _through(door: BrokerDoor, url: str) -> str:
    return f"postgresql://postgres@127.0.0.1:{door.port}/{url.rpartition('/')[2]}"


def _config(tmp_path: Path, url: str, *, reconnect_seconds: float, port: int | None = None) -> Path:
    (tmp_path / "inbox").mkdir(exist_ok=True)
    sections = {"journal": {"backend": "postgresql", "url": url, "reconnect_seconds": reconnect_seconds}}
    if port is not None:
        sections["http"] = {"listen": f"127.0.0.1:{port}"}
    return write_config(
        tmp_path / "stenod.toml",
        top={"state_dir": tmp_path / "state", "log_format": "json"},
        sections=sections,
        watch=[{"path": tmp_path / "inbox", "provider": "echo", "settle_seconds": 0.1}],
    )


def _health(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_database_outage_within_reconnect_seconds_loses_nothing(tmp_path, database, door, echo_plugin):
    port = free_port()
    cfg = _config(tmp_path, _through(door, database), reconnect_seconds=60, port=port)
    inbox = tmp_path / "inbox"
    with running(cfg, tmp_path / "daemon.log") as daemon:
        (inbox / "before.wav").write_bytes(b"before")
        wait_for(lambda: (inbox / "before.txt").exists(), "a job before the outage", 30)
        assert _health(port)[0] == 200
        door.close()
        _, body = wait_for(lambda: (h := _health(port))[0] == 503 and h, "/healthz to see the outage", 30)
        assert body["checks"]["journal"]["ok"] is False and body["checks"]["loop"]["ok"] is True
        (inbox / "during.wav").write_bytes(b"during")
        wait_for(lambda: daemon.named("journal.database_unavailable"), "the intake to wait for the database", 30)
        door.open()
        wait_for(lambda: (inbox / "during.txt").exists(), "the file dropped during the outage", 60)
        wait_for(lambda: _health(port)[0] == 200, "healthy again", 30)
        assert daemon.alive
    listing = subprocess.run([*STENOD, "jobs", "--json", "--config", str(cfg)], capture_output=True, text=True)
    assert sorted(j["state"] for j in json.loads(listing.stdout)) == ["succeeded", "succeeded"], listing.stderr


def test_an_outage_past_reconnect_seconds_stops_the_daemon_and_a_restart_finishes_the_work(
    tmp_path, database, door, echo_plugin
):
    cfg = _config(tmp_path, _through(door, database), reconnect_seconds=2)
    inbox = tmp_path / "inbox"
    log = tmp_path / "daemon.log"
    daemon = Daemon(cfg, log).start()
    try:
        daemon.wait_ready()
        door.close()
        (inbox / "late.wav").write_bytes(b"late")
        assert daemon.process.wait(timeout=60) == 1  # exit 1: systemd starts it again (exit 2 would not)
    finally:
        daemon.kill()
    text = log.read_text()
    # Which write meets the cut first is a race: one waiting for a connection ("unavailable"),
    # or a commit whose answer was lost with it ("in doubt"); both stop the daemon with exit 1.
    assert ("journal database" in text and "unavailable" in text) or "journal commit in doubt" in text
    door.open()
    with running(cfg, log):
        wait_for(lambda: (inbox / "late.txt").exists(), "the file, after the restart", 60)
