"""The chaos rig: folders, canary credentials, the fake providers (each its own process),
a door in front of the broker, the daemons' configurations and their supervisors.

One daemon keeps its journal in SQLite; a cluster of N shares a fresh PostgreSQL database,
each daemon with its own state directory, log, config and instance id, all on the same
queue, event exchange and watched folders (what docs/cluster.md asks)."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from support.amqp import BrokerDoor, BrokerNames, delete_topology
from support.harness import fake_server, write_config
from support.postgres import fresh_database
from tests.chaos import postgres
from tests.chaos.broker import EventTap, Publisher
from tests.chaos.evidence import JournalSource
from tests.chaos.plan import BAD_MARKER, CLUSTER_LEASE_SECONDS, node_names
from tests.chaos.supervisor import Supervisor

PROVIDER_TIMEOUT_SECONDS = 3.0  # the plugins' request timeout; a "hang" outlasts it
HANG_SECONDS = PROVIDER_TIMEOUT_SECONDS + 1.5
VACHANA_POLL_SECONDS = 0.5
FOLDERS = {"folder_echo": "echo", "folder_sarvam": "sarvam", "folder_vachana": "vachana"}
FORMATS = {"echo": ["txt", "json", "srt", "vtt"], "sarvam": ["txt", "json", "srt"], "vachana": ["json", "vtt"]}


@dataclass(frozen=True, slots=True)
class Dirs:
    root: Path

    def home(self, node: str | None) -> Path:
        """Where a cluster daemon keeps its state, log and config (the single daemon: the root)."""
        return self.root if node is None else self.root / node

    @property
    def roots(self) -> Path:
        return self.root / "roots"  # amqp.allowed_roots: queue inputs and their outputs

    @property
    def creds(self) -> Path:
        return self.root / "credentials"

    @property
    def ledger(self) -> Path:
        return self.root / "ledger"

    def state_of(self, node: str | None) -> Path:
        return self.home(node) / "state"

    def log_of(self, node: str | None) -> Path:
        return self.home(node) / "daemon.log"

    def fake_log(self, provider: str) -> Path:
        return self.root / f"fake-{provider}.log"

    def inbox(self, provider: str) -> Path:
        return self.root / f"in-{provider}"

    def create(self) -> None:
        for path in (self.roots, self.creds, self.ledger, *(self.inbox(p) for p in FOLDERS.values())):
            path.mkdir(parents=True, exist_ok=True)


@dataclass(frozen=True, slots=True)
class Node:
    """One daemon of the run: its instance id (None: the single daemon), config, log, supervisor."""

    name: str | None
    config: Path
    log: Path
    supervisor: Supervisor


@dataclass
class Rig:
    """Everything a chaos run talks to."""

    dirs: Dirs
    names: BrokerNames
    keys: dict[str, str]
    fakes: dict[str, str]  # provider: base URL
    door: BrokerDoor
    nodes: list[Node]
    tap: EventTap
    publisher: Publisher
    env: dict[str, str]
    journal: JournalSource  # the SQLite file, or the cluster's PostgreSQL URL
    outages: postgres.Outages

    @property
    def supervisor(self) -> Supervisor:
        """The first daemon's (the only one's, without a cluster)."""
        return self.nodes[0].supervisor

    @property
    def supervisors(self) -> list[Supervisor]:
        return [node.supervisor for node in self.nodes]

    def node(self, name: str | None) -> Node:
        """The daemon a fault names (None: the first)."""
        return next((n for n in self.nodes if n.name == name), self.nodes[0]) if name else self.nodes[0]

    def fake_stats(self, provider: str) -> dict[str, Any]:
        return dict(httpx.get(f"{self.fakes[provider]}/__fake__/stats", timeout=10).json())

    def fake_faults(self, provider: str, rules: list[dict[str, Any]]) -> None:
        """Load a fault script; failing files ("…bad…") stay configured with every script."""
        script = {"rules": rules, "fail_files": [f"*{BAD_MARKER}*"]}
        httpx.post(f"{self.fakes[provider]}/__fake__/faults", json=script, timeout=10).raise_for_status()


def canary_keys() -> dict[str, str]:
    """API keys that must never show up anywhere but in the credentials folder."""
    return {p: f"CANARY-{p}-{secrets.token_hex(8)}" for p in ("sarvam", "vachana")}


def daemon_config(
    dirs: Dirs,
    names: BrokerNames,
    door: BrokerDoor,
    fakes: dict[str, str],
    *,
    node: str | None = None,
    database: str | None = None,
) -> Path:
    """One daemon's config; with ``node`` and ``database``, a cluster member's."""
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
    sections: dict[str, dict[str, Any]] = {}
    if node is not None:
        sections["journal"] = {
            "backend": "postgresql",
            "url": database,
            "lease_seconds": CLUSTER_LEASE_SECONDS,
            "reconnect_seconds": 30,  # the plan's database outages are far shorter
        }
    home = dirs.home(node)
    home.mkdir(parents=True, exist_ok=True)
    return write_config(
        home / "stenod.toml",
        top={
            "state_dir": dirs.state_of(node),
            **({"instance_id": node} if node is not None else {}),
            "log_format": "json",
            "log_level": "debug",
            "default_provider": "echo",
            "pack_window_seconds": 0.3,
            "shutdown_grace_seconds": 3,
            "rescan_interval_seconds": 3,
        },
        sections={
            "amqp": names.amqp_section(
                door.url,
                allowed_roots=[dirs.roots],
                publish_timeout_seconds=3,
                progress_interval_seconds=1,
                connection_name=f"{names.prefix}.{node or 'daemon'}",
            ),
            "retry": {"max_attempts": 12, "base_seconds": 0.2, "max_seconds": 2.0},
            "http": {"timeout_seconds": PROVIDER_TIMEOUT_SECONDS, "connect_timeout_seconds": 2},
            **sections,
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
def rig(root: Path, label: str = "chaos", *, cluster: int = 1) -> Iterator[Rig]:
    """Build the rig under ``root``, start the daemon(s) and bind the event tap; tear it all
    down at the end (the broker is shared: every queue and exchange of the run is deleted;
    so is the PostgreSQL server: it is running again when the rig is gone)."""
    dirs = Dirs(root)
    dirs.create()
    keys = canary_keys()
    for provider, key in keys.items():
        (dirs.creds / f"{provider}.api_key").write_text(key)
    names = BrokerNames.new(label)
    outages = postgres.Outages()
    with ExitStack() as stack:
        journal: JournalSource = dirs.state_of(None) / "journal.db"
        if cluster > 1:
            postgres.ensure_running()
            journal = stack.enter_context(fresh_database("stenod_chaos"))
            stack.callback(postgres.ensure_running)  # before the database is dropped
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
        env = {"CREDENTIALS_DIRECTORY": str(dirs.creds)}
        if isinstance(journal, str):  # over a journal a caller's environment may name (--journal-backend)
            env |= {"STENOD_JOURNAL__BACKEND": "postgresql", "STENOD_JOURNAL__URL": journal}
        nodes = []
        for name in node_names(cluster) if cluster > 1 else (None,):
            database = journal if isinstance(journal, str) else None
            config = daemon_config(dirs, names, door, fakes, node=name, database=database)
            log = dirs.log_of(name)
            supervisor = Supervisor(config, log, env, name=name or "daemon", outages=outages)
            nodes.append(Node(name, config, log, supervisor))
        tap = EventTap(names)
        publisher = Publisher(names)
        stack.callback(delete_topology, names)
        stack.callback(tap.delete)
        stack.callback(tap.stop)
        stack.callback(publisher.close)
        for node in nodes:
            stack.callback(node.supervisor.stop)
        the_rig = Rig(dirs, names, keys, fakes, door, nodes, tap, publisher, env, journal, outages)
        for provider in fakes:
            the_rig.fake_faults(provider, [])
        _start_all(the_rig.supervisors)
        _wait_for_relay(nodes[0].log)
        tap.bind()
        yield the_rig


def _start_all(supervisors: list[Supervisor]) -> None:
    """Start the daemons side by side (each start waits for its daemon to be ready)."""
    threads = [threading.Thread(target=s.start, name=f"chaos:start:{s.name}") for s in supervisors]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _wait_for_relay(log: Path, timeout: float = 60.0) -> None:
    """The event exchange exists once the relay has declared it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if '"amqp.relay_ready"' in log.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise AssertionError(f"the daemon never declared its event exchange:\n{log.read_text()[-3000:]}")
