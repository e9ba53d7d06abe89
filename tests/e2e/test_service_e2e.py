"""``stenod run`` as systemd runs it: notify protocol, SIGHUP reload, health and metrics."""

from __future__ import annotations

import json
import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

from support.harness import Daemon, running, wait_for, write_config
from support.server import free_port


def _notify_socket(tmp: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp / "notify.sock"))
    sock.settimeout(0.2)
    return sock


def _drain(sock: socket.socket, into: list[tuple[float, str]]) -> list[tuple[float, str]]:
    """Add what the daemon has sent to ``into``; returns ``into``, every message so far."""
    while True:
        try:
            data = sock.recv(4096)
        except TimeoutError:
            return into
        into.extend((time.monotonic(), line) for line in data.decode().splitlines())


def test_ready_after_start_up_watchdog_pings_and_stopping_on_sigterm(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for n in range(3):
        (inbox / f"pre{n}.wav").write_bytes(b"x")  # the start-up scan must see these before READY
    cfg = write_config(
        tmp_path / "stenod.toml",
        top={"state_dir": tmp_path / "state", "log_format": "json"},
        watch=[{"path": inbox, "provider": "echo", "settle_seconds": 0.1}],
    )
    sock = _notify_socket(tmp_path)
    messages: list[tuple[float, str]] = []
    daemon = Daemon(
        cfg, tmp_path / "daemon.log", env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "1000000"}
    ).start()
    try:
        wait_for(lambda: any(m == "READY=1" for _, m in _drain(sock, messages)), "READY=1", 60)
        ready_at = next(t for t, m in messages if m == "READY=1")
        time.sleep(3)
        _drain(sock, messages)
        pings = [t for t, m in messages if m == "WATCHDOG=1" and t > ready_at]
        assert len(pings) >= 4  # every WATCHDOG_USEC/2 = 0.5 s over 3 s, with slack for a busy machine
        assert any(m.startswith("STATUS=") and "jobs in flight" in m for _, m in messages)
        daemon.process.send_signal(signal.SIGTERM)
        assert daemon.process.wait(timeout=30) == 0
        _drain(sock, messages)
        assert any(m == "STOPPING=1" for _, m in messages)
        scan_done = [e for e in daemon.events() if e.get("event") == "daemon.ready"]
        assert scan_done, "daemon.ready is logged when READY=1 is sent"
    finally:
        daemon.kill()
        sock.close()


def test_sighup_picks_up_a_changed_rule_and_keeps_the_old_config_when_the_new_one_is_broken(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    cfg_path = tmp_path / "stenod.toml"

    def config(folder: Path) -> Path:
        return write_config(
            cfg_path,
            top={"state_dir": tmp_path / "state", "log_format": "json"},
            watch=[{"path": folder, "provider": "echo", "settle_seconds": 0.1}],
        )

    with running(config(first), tmp_path / "daemon.log") as daemon:
        config(second)
        daemon.process.send_signal(signal.SIGHUP)
        wait_for(lambda: daemon.named("config.reloaded"), "reload", 30)
        (second / "new.wav").write_bytes(b"n")
        (first / "old.wav").write_bytes(b"o")
        wait_for(lambda: (second / "new.txt").exists(), "the new rule to work", 30)
        cfg_path.write_text("[[watch]\nthis is not toml\n")
        daemon.process.send_signal(signal.SIGHUP)
        wait_for(lambda: daemon.named("config.reload_refused"), "the broken reload to be refused", 30)
        (second / "still.wav").write_bytes(b"s")
        wait_for(lambda: (second / "still.txt").exists(), "the old config to stay in force", 30)
        assert daemon.alive
        time.sleep(1.0)
    assert not (first / "old.txt").exists()  # the removed rule no longer takes files
    refused = daemon.named("config.reload_refused")[0]
    assert "not valid TOML" in refused["error"]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_healthz_follows_the_broker_and_metrics_move_as_jobs_run(tmp_path, journal_backend):
    from support.amqp import BrokerDoor, BrokerNames, delete_topology

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    port = free_port()
    names = BrokerNames.new("health")
    door = BrokerDoor()  # between daemon and broker: closing it is a broker outage for this daemon alone
    door.open()
    cfg = write_config(
        tmp_path / "stenod.toml",
        top={"state_dir": tmp_path / "state", "log_format": "json"},
        sections={"health": {"listen": f"127.0.0.1:{port}"}, "amqp": names.amqp_section(door.url)},
        watch=[{"path": inbox, "provider": "echo", "settle_seconds": 0.1}],
    )
    if True:
        try:
            with running(cfg, tmp_path / "daemon.log"):
                base = f"http://127.0.0.1:{port}"
                wait_for(lambda: _get(f"{base}/healthz")[0] == 200, "healthy with the broker", 60)
                checks = json.loads(_get(f"{base}/healthz")[1])["checks"]
                assert set(checks) >= {"journal", "loop", "broker"}
                before = _metric(_get(f"{base}/metrics")[1], "stenod_items_total", provider="echo", state="succeeded")
                for n in range(3):
                    (inbox / f"m{n}.wav").write_bytes(b"m" * (n + 1))
                wait_for(lambda: all((inbox / f"m{n}.txt").exists() for n in range(3)), "three jobs", 30)
                metrics = wait_for(
                    lambda: (
                        lambda t: (
                            t
                            if _metric(t, "stenod_items_total", provider="echo", state="succeeded") >= before + 3
                            else None
                        )
                    )(_get(f"{base}/metrics")[1]),
                    "item counter to move",
                    30,
                )
                assert _metric(metrics, "stenod_files_seen_total") >= 3
                # Each job's states, as the journal committed them (jobs entering a state).
                assert _metric(metrics, "stenod_jobs_total", provider="echo", state="accepted") == 3
                assert _metric(metrics, "stenod_jobs_total", provider="echo", state="succeeded") == 3
                door.close()
                wait_for(lambda: _get(f"{base}/healthz")[0] == 503, "unhealthy without the broker", 60)
                assert json.loads(_get(f"{base}/healthz")[1])["checks"]["broker"]["ok"] is False
                door.open()
                wait_for(lambda: _get(f"{base}/healthz")[0] == 200, "healthy again", 60)
        finally:
            door.close()
            delete_topology(names)
