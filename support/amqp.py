"""Helpers for tests against the real RabbitMQ on localhost (no mocked broker).

Every test gets its own queue and exchange names (``BrokerNames``) and deletes them at
the end, because other people use the same broker at the same time. The test side talks
AMQP with pika, a different client library than the daemon's aio-pika.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from support.harness import Daemon, wait_for, write_config
from support.server import free_port

BROKER_URL = os.environ.get("STENOD_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
# The node ``rabbitmqctl`` stops and starts: the one BROKER_URL points at. Unset, the
# machine's default node; a chaos run on a broker of its own names it here, so that its
# restarts never stop the broker other people's tests use.
BROKER_NODE = os.environ.get("STENOD_TEST_RABBITMQ_NODE", "")
ECHO_CREATED = "created.log"


@dataclass(frozen=True)
class BrokerNames:
    """Per-test names of every queue and exchange the daemon declares."""

    prefix: str

    @classmethod
    def new(cls, label: str) -> BrokerNames:
        safe = "".join(ch if ch.isalnum() else "-" for ch in label)[:40]
        return cls(f"t.{safe}.{uuid.uuid4().hex[:8]}")

    @property
    def requests(self) -> str:
        return f"{self.prefix}.requests"

    @property
    def dead(self) -> str:
        return f"{self.prefix}.dead"

    @property
    def dlx(self) -> str:
        return f"{self.prefix}.dlx"

    @property
    def events(self) -> str:
        return f"{self.prefix}.events"

    @property
    def unrouted(self) -> str:
        return f"{self.prefix}.events.unrouted"

    def amqp_section(self, url: str = BROKER_URL, **extra: Any) -> dict[str, Any]:
        return {
            "url": url,
            "request_queue": self.requests,
            "event_exchange": self.events,
            "dead_letter_exchange": self.dlx,
            "dead_letter_queue": self.dead,
            "connection_name": self.prefix,
            "reconnect_interval_seconds": 0.5,
            **extra,
        }


def connect(url: str = BROKER_URL) -> pika.BlockingConnection:
    try:
        return pika.BlockingConnection(pika.URLParameters(url))
    except pika.exceptions.AMQPError as exc:
        pytest.fail(f"RabbitMQ is not reachable at {url} ({exc!r}); run tests/setup-system.sh")


def delete_topology(names: BrokerNames) -> None:
    """Remove everything a test's daemon declared (the broker is shared)."""
    conn = connect()
    try:
        ch = conn.channel()
        for queue in (names.requests, names.dead, names.unrouted):
            ch.queue_delete(queue)
        for exchange in (names.events, names.unrouted, names.dlx):
            ch.exchange_delete(exchange)
    finally:
        conn.close()


class Client:
    """The test's AMQP side (pika): publish requests, collect events and dead letters."""

    def __init__(self, names: BrokerNames) -> None:
        self.names = names
        self.conn = connect()
        self.ch: BlockingChannel = self.conn.channel()
        self.ch.confirm_delivery()

    def close(self) -> None:
        with suppress(pika.exceptions.AMQPError):  # a broker restart may already have closed it
            if self.conn.is_open:
                self.conn.close()

    def bind_events(self, pattern: str = "job.#") -> str:
        """An exclusive queue bound to the event exchange (which must exist: start the daemon first)."""
        queue = self.ch.queue_declare("", exclusive=True).method.queue
        self.ch.queue_bind(queue, self.names.events, pattern)
        return queue

    def reply_queue(self) -> str:
        return self.ch.queue_declare("", exclusive=True).method.queue

    def publish(self, body: bytes | dict[str, Any], **props: Any) -> None:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        props.setdefault("delivery_mode", 2)
        self.ch.basic_publish("", self.names.requests, data, pika.BasicProperties(**props), mandatory=True)

    def take(self, queue: str, until: Callable[[list[Any]], bool], timeout: float = 30.0) -> list[Any]:
        """Messages (method, properties, body) from ``queue`` until ``until(all so far)``."""
        got: list[Any] = []
        deadline = time.monotonic() + timeout
        while not until(got):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout:.0f} s on {queue}; got {len(got)}: {[g[2][:200] for g in got][-5:]}"
                )
            method, props, body = self.ch.basic_get(queue, auto_ack=True)
            if method is None:
                self.conn.sleep(0.05)
                continue
            got.append((method, props, body))
        return got

    def events(
        self, queue: str, until: Callable[[list[dict[str, Any]]], bool], timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        """Decoded CloudEvents, each with the AMQP properties added under ``_amqp``."""
        out: list[dict[str, Any]] = []

        def done(raw: list[Any]) -> bool:
            while len(out) < len(raw):
                method, props, body = raw[len(out)]
                event = json.loads(body)
                event["_amqp"] = {
                    "routing_key": method.routing_key,
                    "message_id": props.message_id,
                    "content_type": props.content_type,
                    "delivery_mode": props.delivery_mode,
                    "correlation_id": props.correlation_id,
                    "type": props.type,
                }
                out.append(event)
            return until(out)

        self.take(queue, done, timeout)
        return out


def created_jobs(ledger: Path) -> list[str]:
    """Remote jobs the echo provider created (one line each), across daemon restarts."""
    path = ledger / ECHO_CREATED
    return path.read_text().splitlines() if path.exists() else []


def terminal(events: list[dict[str, Any]], request_ids: set[str]) -> set[str]:
    done = {"succeeded", "partial", "failed", "cancelled", "rejected"}
    return {e["data"]["request_id"] for e in events if e["data"]["state"] in done} & request_ids


def rabbitmqctl_argv(*args: str) -> list[str]:
    """A ``rabbitmqctl`` command line for the node the tests' broker runs on."""
    node = ["-n", BROKER_NODE] if BROKER_NODE else []
    return ["rabbitmqctl", "-q", *node, *args]


def rabbitmqctl(*args: str) -> None:
    subprocess.run(rabbitmqctl_argv(*args), check=True, capture_output=True, timeout=120)


@contextmanager
def broker_stopped() -> Iterator[None]:
    """``rabbitmqctl stop_app`` … ``start_app``; the broker is restarted whatever happens."""
    rabbitmqctl("stop_app")
    try:
        yield
    finally:
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")


def _broker_address() -> tuple[str, int]:
    """Host and port of BROKER_URL (the broker the tests, and so their doors, use)."""
    url = urllib.parse.urlsplit(BROKER_URL)
    return url.hostname or "127.0.0.1", url.port or 5672


class BrokerDoor:
    """A TCP forwarder on its own port to the real broker, for one daemon only: closed = "the
    broker is down" for that daemon (its connection cut with an RST, as a crashed broker
    gives), without touching the broker other tests share. While the broker itself is away,
    connections through an open door are refused."""

    def __init__(self, target: tuple[str, int] | None = None, *, admit: int | None = None) -> None:
        """``admit``: forward this many connections, then reset each further one as it
        opens (a server that went away between two connections of a client)."""
        self.port = free_port()
        self._target = target or _broker_address()
        self._admit = admit
        self._server: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def open(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(16)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), name="broker-door", daemon=True).start()

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone would leave the
            # socket listening (the blocked call holds it) and the door open.
            with suppress(OSError):
                server.shutdown(socket.SHUT_RDWR)
            server.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            # A pipe thread blocked in recv() on this socket keeps it open past close() (Linux
            # frees a socket once no call uses it): a side that is only waiting for an answer
            # (a query in flight, an idle server holding a session and its locks) would never
            # hear of the cut. shutdown() wakes that recv(); close() then resets the connection.
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            if self._admit is not None:
                if self._admit <= 0:
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    client.close()
                    continue
                self._admit -= 1
            try:
                upstream = socket.create_connection(self._target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()  # the broker itself is away: the daemon sees a refused connection
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with suppress(OSError):
                dst.shutdown(socket.SHUT_WR)


@dataclass
class QueueDaemon:
    """A ``stenod run`` subprocess with the queue interface on per-test names."""

    daemon: Daemon
    names: BrokerNames
    client: Client
    tmp: Path
    roots: Path
    config: Path

    def wait_consuming(self, timeout: float = 60.0) -> None:
        wait_for(
            lambda: (
                self.daemon.named("amqp.consuming", since_start=True)
                and self.daemon.named("amqp.relay_ready", since_start=True)
            ),
            "amqp.consuming",
            timeout,
        )

    def restart(self, env: dict[str, str] | None = None) -> None:
        self.daemon.kill()
        self.daemon = Daemon(self.config, self.daemon.log_path, env=env).start()
        self.daemon.wait_ready()


def queue_config(
    tmp: Path,
    names: BrokerNames,
    *,
    amqp: dict[str, Any] | None = None,
    echo: dict[str, Any] | None = None,
    watch: list[dict[str, Any]] | None = None,
    url: str = BROKER_URL,
) -> Path:
    roots = tmp / "roots"
    roots.mkdir(exist_ok=True)
    return write_config(
        tmp / "stenod.toml",
        top={
            "state_dir": tmp / "state",
            "log_format": "json",
            "default_provider": "echo",
            "pack_window_seconds": 0.05,
            "shutdown_grace_seconds": 5,
        },
        sections={"amqp": names.amqp_section(url, allowed_roots=[roots], **(amqp or {}))},
        watch=watch or [],
        providers={"echo": {"ledger_dir": tmp, **(echo or {})}},
    )


@contextmanager
def queue_daemon(
    tmp: Path, label: str, *, env: dict[str, str] | None = None, wait: bool = True, url: str = BROKER_URL, **config: Any
) -> Iterator[QueueDaemon]:
    """Start a daemon on fresh names; on exit kill it and delete its queues and exchanges."""
    names = BrokerNames.new(label)
    path = queue_config(tmp, names, url=url, **config)
    daemon = Daemon(path, tmp / "daemon.log", env=env).start()
    client = Client(names)
    handle = QueueDaemon(daemon, names, client, tmp, tmp / "roots", path)
    try:
        handle.daemon.wait_ready()
        if wait:
            handle.wait_consuming()
        yield handle
    finally:
        handle.daemon.kill()
        client.close()
        delete_topology(names)
