"""The chaos rig: folders, canary credentials, the fake providers (each its own process),
a door in front of the broker, the daemon's configuration and its supervisor."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.amqp_support import BrokerDoor, BrokerNames, delete_topology
from tests.chaos.broker import EventTap, Publisher
from tests.chaos.plan import BAD_MARKER
from tests.chaos.supervisor import Supervisor
from tests.e2e.harness import fake_server, write_config

PROVIDER_TIMEOUT_SECONDS = 3.0  # the plugins' request timeout; a "hang" outlasts it
HANG_SECONDS = PROVIDER_TIMEOUT_SECONDS + 1.5
VACHANA_POLL_SECONDS = 0.5
FOLDERS = {"folder_echo": "echo", "folder_sarvam": "sarvam", "folder_vachana": "vachana"}
FORMATS = {"echo": ["txt", "json", "srt", "vtt"], "sarvam": ["txt", "json", "srt"], "vachana": ["json", "vtt"]}


@dataclass(frozen=True, slots=True)
class Dirs:
    root: Path

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def roots(self) -> Path:
        return self.root / "roots"  # amqp.allowed_roots: queue inputs and their outputs

    @property
    def creds(self) -> Path:
        return self.root / "credentials"

    @property
    def ledger(self) -> Path:
        return self.root / "ledger"

    @property
    def log(self) -> Path:
        return self.root / "daemon.log"

    def fake_log(self, provider: str) -> Path:
        return self.root / f"fake-{provider}.log"

    def inbox(self, provider: str) -> Path:
        return self.root / f"in-{provider}"

    def create(self) -> None:
        for path in (self.roots, self.creds, self.ledger, *(self.inbox(p) for p in FOLDERS.values())):
            path.mkdir(parents=True, exist_ok=True)


@dataclass
class Rig:
    """Everything a chaos run talks to."""

    dirs: Dirs
    names: BrokerNames
    keys: dict[str, str]
    fakes: dict[str, str]  # provider: base URL
    door: BrokerDoor
    supervisor: Supervisor
    tap: EventTap
    publisher: Publisher
    config: Path
    env: dict[str, str]

    def fake_stats(self, provider: str) -> dict[str, Any]:
        return dict(httpx.get(f"{self.fakes[provider]}/__fake__/stats", timeout=10).json())

    def fake_faults(self, provider: str, rules: list[dict[str, Any]]) -> None:
        """Load a fault script; failing files ("…bad…") stay configured with every script."""
        script = {"rules": rules, "fail_files": [f"*{BAD_MARKER}*"]}
        httpx.post(f"{self.fakes[provider]}/__fake__/faults", json=script, timeout=10).raise_for_status()


def canary_keys() -> dict[str, str]:
    """API keys that must never show up anywhere but in the credentials folder."""
    return {p: f"CANARY-{p}-{secrets.token_hex(8)}" for p in ("sarvam", "vachana")}


def daemon_config(dirs: Dirs, names: BrokerNames, door: BrokerDoor, fakes: dict[str, str]) -> Path:
    watch = [
        {
            "path": dirs.inbox(provider),
            "provider": provider,
            "language": "hi-IN",
            "formats": FORMATS[provider],
            "settle_seconds": 0.3,
        }
        for provider in FOLDERS.values()
    ]
    return write_config(
        dirs.root / "stenod.toml",
        top={
            "state_dir": dirs.state,
            "log_format": "json",
            "log_level": "debug",
            "default_provider": "echo",
            "pack_window_seconds": 0.3,
            "shutdown_grace_seconds": 3,
            "rescan_interval_seconds": 3,
        },
        sections={
            "amqp": names.amqp_section(
                door.url, allowed_roots=[dirs.roots], publish_timeout_seconds=3, progress_interval_seconds=1
            ),
            "retry": {"max_attempts": 12, "base_seconds": 0.2, "max_seconds": 2.0},
            "http": {"timeout_seconds": PROVIDER_TIMEOUT_SECONDS, "connect_timeout_seconds": 2},
        },
        watch=watch,
        providers={
            "echo": {"ledger_dir": dirs.ledger, "job_seconds": 0.3, "fail_marker": BAD_MARKER, "max_files": 4},
            "sarvam": {
                "base_url": fakes["sarvam"],
                "poll_interval_seconds": 0.2,
                "request_timeout_seconds": PROVIDER_TIMEOUT_SECONDS,
            },
            "vachana": {
                "base_url": fakes["vachana"],
                "poll_interval_seconds": VACHANA_POLL_SECONDS,
                "request_timeout_seconds": PROVIDER_TIMEOUT_SECONDS,
            },
        },
    )


@contextmanager
def rig(root: Path, label: str = "chaos") -> Iterator[Rig]:
    """Build the rig under ``root``, start the daemon and bind the event tap; tear it all
    down at the end (the broker is shared: every queue and exchange of the run is deleted)."""
    dirs = Dirs(root)
    dirs.create()
    keys = canary_keys()
    for provider, key in keys.items():
        (dirs.creds / f"{provider}.api_key").write_text(key)
    names = BrokerNames.new(label)
    with ExitStack() as stack:
        fakes = {
            "sarvam": stack.enter_context(
                fake_server("tests.fakes.sarvam", "--api-key", keys["sarvam"], log=dirs.fake_log("sarvam"))
            ),
            "vachana": stack.enter_context(
                fake_server(
                    "tests.fakes.vachana",
                    "--api-key",
                    keys["vachana"],
                    "--poll-interval",
                    str(VACHANA_POLL_SECONDS),
                    log=dirs.fake_log("vachana"),
                )
            ),
        }
        door = BrokerDoor()
        door.open()
        stack.callback(door.close)
        config = daemon_config(dirs, names, door, fakes)
        env = {"CREDENTIALS_DIRECTORY": str(dirs.creds)}
        supervisor = Supervisor(config, dirs.log, env)
        tap = EventTap(names)
        publisher = Publisher(names)
        stack.callback(delete_topology, names)
        stack.callback(tap.delete)
        stack.callback(tap.stop)
        stack.callback(publisher.close)
        stack.callback(supervisor.stop)
        the_rig = Rig(dirs, names, keys, fakes, door, supervisor, tap, publisher, config, env)
        for provider in fakes:
            the_rig.fake_faults(provider, [])
        supervisor.start()
        _wait_for_relay(dirs.log)
        tap.bind()
        yield the_rig


def _wait_for_relay(log: Path, timeout: float = 60.0) -> None:
    """The event exchange exists once the relay has declared it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if '"amqp.relay_ready"' in log.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise AssertionError(f"the daemon never declared its event exchange:\n{log.read_text()[-3000:]}")
