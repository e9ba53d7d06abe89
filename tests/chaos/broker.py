"""The chaos run's own AMQP side (pika, not the daemon's aio-pika): an event tap that
survives broker restarts, a publisher that retries until the broker confirmed, and the
broker faults themselves.

The tap's queue is durable and not exclusive: an exclusive queue dies with its
connection, so every broker restart would silently lose the events in between, and the
run would blame the daemon for it.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions

from support.amqp import BROKER_URL, BrokerNames, rabbitmqctl_argv

_RETRY_SECONDS = 0.3
_ERRORS = (pika.exceptions.AMQPError, OSError)


def _connect() -> pika.BlockingConnection:
    params = pika.URLParameters(BROKER_URL)
    params.connection_attempts = 1
    params.socket_timeout = 5
    params.blocked_connection_timeout = 30
    return pika.BlockingConnection(params)


@dataclass(frozen=True, slots=True)
class TappedEvent:
    body: bytes
    event: dict[str, Any] | None  # None: the body is not JSON (counted as a defect)
    received: float


class EventTap:
    """Collects every event the daemon publishes (bound ``job.#``), acking each after
    keeping it, reconnecting whenever the broker goes away."""

    def __init__(self, names: BrokerNames) -> None:
        self.names = names
        self.queue = f"{names.prefix}.chaos-tap"
        self.events: list[TappedEvent] = []
        self.reconnects = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="chaos:event-tap", daemon=True)

    def bind(self) -> None:
        """Declare the tap queue and bind it (the daemon must have declared the exchange)."""
        conn = _connect()
        try:
            ch = conn.channel()
            ch.queue_declare(self.queue, durable=True)
            ch.queue_bind(self.queue, self.names.events, "job.#")
        finally:
            conn.close()
        self._thread.start()

    def snapshot(self) -> list[TappedEvent]:
        with self._lock:
            return list(self.events)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=15)

    def delete(self) -> None:
        with suppress(*_ERRORS):
            conn = _connect()
            try:
                conn.channel().queue_delete(self.queue)
            finally:
                conn.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn = _connect()
            except _ERRORS:
                self._stop.wait(_RETRY_SECONDS)
                continue
            try:
                ch = conn.channel()
                ch.basic_qos(prefetch_count=500)
                ch.basic_consume(self.queue, self._on_message)
                while not self._stop.is_set():
                    conn.process_data_events(time_limit=0.2)
            except _ERRORS:
                self.reconnects += 1
            finally:
                with suppress(*_ERRORS):
                    if conn.is_open:
                        conn.close()

    def _on_message(self, ch: Any, method: Any, props: Any, body: bytes) -> None:
        try:
            event = json.loads(body)
        except ValueError:
            event = None
        with self._lock:
            self.events.append(TappedEvent(body, event if isinstance(event, dict) else None, time.monotonic()))
        ch.basic_ack(method.delivery_tag)


class Publisher:
    """Publishes requests persistently with confirms; a publish the broker did not confirm
    is sent again (same request_id, so the daemon runs it once)."""

    def __init__(self, names: BrokerNames) -> None:
        self.names = names
        self.retries = 0
        self._conn: pika.BlockingConnection | None = None
        self._ch: Any = None

    def publish(self, body: dict[str, Any], *, deadline_seconds: float = 180.0) -> None:
        """Raises TimeoutError if the broker would not confirm within the deadline."""
        data = json.dumps(body).encode()
        props = pika.BasicProperties(
            delivery_mode=2, content_type="application/json", message_id=str(body.get("request_id"))
        )
        deadline = time.monotonic() + deadline_seconds
        while True:
            try:
                if self._ch is None:
                    self._conn = _connect()
                    self._ch = self._conn.channel()
                    self._ch.confirm_delivery()
                self._ch.basic_publish("", self.names.requests, data, props, mandatory=True)
                return
            except (*_ERRORS, pika.exceptions.UnroutableError, pika.exceptions.NackError):
                self.retries += 1
                self.close()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the broker did not confirm {body.get('request_id')}") from None
                time.sleep(_RETRY_SECONDS)

    def close(self) -> None:
        with suppress(*_ERRORS):
            if self._conn is not None and self._conn.is_open:
                self._conn.close()
        self._conn, self._ch = None, None


def rabbitmqctl(*args: str, timeout: float = 120.0) -> str:
    return subprocess.run(rabbitmqctl_argv(*args), check=True, capture_output=True, text=True, timeout=timeout).stdout


def restart_broker(away_seconds: float) -> None:
    """``stop_app`` … ``start_app`` on the shared broker; started again whatever happens."""
    rabbitmqctl("stop_app")
    try:
        time.sleep(away_seconds)
    finally:
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")


def queue_depths(names: BrokerNames, *, wait_seconds: float = 60.0) -> dict[str, tuple[int, int]]:
    """(ready + unacked, unacked) of this run's queues, as the broker counts them. The broker
    is shared: while another test has it stopped, ask again (for up to ``wait_seconds``)."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            out = rabbitmqctl("list_queues", "name", "messages", "messages_unacknowledged")
            break
        except subprocess.CalledProcessError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)
    depths: dict[str, tuple[int, int]] = {}
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[0].startswith(names.prefix):
            depths[parts[0]] = (int(parts[1]), int(parts[2]))
    return depths


def dead_letters(names: BrokerNames, *, limit: int = 20) -> list[str]:
    """What the dead-letter queue holds, one line per message: its request, who dead-lettered
    it and why (the daemon's ``x-stenod-*`` headers, or the broker's ``x-death``: a delivery
    limit reached is ``delivery_limit``). Read at the end of a run, the queue then deleted."""
    lines = []
    with suppress(*_ERRORS):
        conn = _connect()
        try:
            ch = conn.channel()
            for _ in range(limit):
                method, props, body = ch.basic_get(names.dead, auto_ack=False)
                if method is None:
                    break
                assert props is not None and body is not None  # a message came with the method
                headers: dict[str, Any] = dict(props.headers or {})  # AMQP tables: whatever the sender put
                try:
                    request = json.loads(body).get("request_id")
                except (ValueError, AttributeError):
                    request = None
                deaths = [
                    f"{d.get('reason')} x{d.get('count')} from {d.get('queue')}" for d in headers.get("x-death") or []
                ]
                lines.append(
                    f"request {request}: {headers.get('x-stenod-error-code') or '; '.join(deaths) or 'no reason'}"
                    f" (x-delivery-count {headers.get('x-delivery-count')}, message_id {props.message_id})"
                )
        finally:
            conn.close()
    return lines
