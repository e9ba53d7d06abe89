"""RabbitMQ names, declarations and the daemon's one robust connection.

Shared by the request consumer, the event relay and the ``stenod submit``/``cancel``
commands, so all of them declare the same durable topology with the same arguments
(a redeclaration with different arguments is a channel error in RabbitMQ).

Topology::

    request queue (quorum, x-delivery-limit, DLX) ──dead letters──> dead-letter exchange (direct)
                                                                      └─> dead-letter queue (quorum)
    event exchange (topic, durable) ──unroutable──> <exchange>.unrouted (fanout, alternate exchange)
                                                      └─> <exchange>.unrouted queue (bounded)
"""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)

from stenod.settings import AmqpSettings

log = structlog.get_logger("stenod.amqp")

# Unrouted events are kept (not dropped) but bounded: the oldest go first.
UNROUTED_MAX_LENGTH = 100_000
_CONNECT_TIMEOUT_SECONDS = 10.0
_MAX_BACKOFF_SECONDS = 10.0


def request_queue_arguments(amqp: AmqpSettings) -> dict[str, Any]:
    """Arguments of the request queue: quorum, explicit delivery limit, dead-lettering.

    The delivery limit is explicit because RabbitMQ 3.x has no default. Dead-lettering is
    at-least-once (quorum queues only; it needs ``x-overflow = reject-publish``) so a poison
    message reaching the limit cannot be lost on its way to the dead-letter queue.
    """
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": amqp.delivery_limit,
        "x-dead-letter-exchange": amqp.dead_letter_exchange,
        "x-dead-letter-routing-key": amqp.dead_letter_queue,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


def unrouted_name(amqp: AmqpSettings) -> str:
    """Name of the alternate exchange and of its queue for events nobody is bound for."""
    return f"{amqp.event_exchange}.unrouted"


async def declare_requests(channel: AbstractChannel, amqp: AmqpSettings) -> tuple[AbstractQueue, AbstractExchange]:
    """Declare the dead-letter exchange and queue, then the request queue.

    Returns the request queue and the dead-letter exchange. Raises aio-pika's
    ``ChannelPreconditionFailed`` if a queue of that name exists with other arguments.
    """
    dlx = await channel.declare_exchange(amqp.dead_letter_exchange, aio_pika.ExchangeType.DIRECT, durable=True)
    dlq = await channel.declare_queue(amqp.dead_letter_queue, durable=True, arguments={"x-queue-type": "quorum"})
    await dlq.bind(dlx, routing_key=amqp.dead_letter_queue)
    queue = await channel.declare_queue(amqp.request_queue, durable=True, arguments=request_queue_arguments(amqp))
    return queue, dlx


async def open_channel(connection: AbstractRobustConnection) -> AbstractRobustChannel:
    """A channel with publisher confirms. A failure to open it is a ConnectionError: when the
    connection drops while the channel opens, aiormq fails the pending call with a bare
    ``Exception`` (found by the cluster chaos run: it stopped a daemon), which no narrower
    clause catches."""
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    except Exception as exc:
        raise ConnectionError(f"opening a channel failed: {exc!r}") from exc
    return channel


async def declare_events(channel: AbstractChannel, amqp: AmqpSettings) -> AbstractExchange:
    """Declare the durable topic event exchange with its alternate exchange and queue.

    An event no consumer is bound for lands in ``<exchange>.unrouted`` instead of being
    dropped by the broker (reliability R7); that queue keeps the newest
    ``UNROUTED_MAX_LENGTH`` events.
    """
    name = unrouted_name(amqp)
    alternate = await channel.declare_exchange(name, aio_pika.ExchangeType.FANOUT, durable=True)
    unrouted = await channel.declare_queue(
        name, durable=True, arguments={"x-max-length": UNROUTED_MAX_LENGTH, "x-overflow": "drop-head"}
    )
    await unrouted.bind(alternate)
    return await channel.declare_exchange(
        amqp.event_exchange, aio_pika.ExchangeType.TOPIC, durable=True, arguments={"alternate-exchange": name}
    )


class BrokerLink:
    """Owns the daemon's one robust AMQP connection.

    The first connection is made in the background with backoff, so the daemon starts
    and does folder work while the broker is down (reliability R9); after that aio-pika's
    robust connection reconnects and restores channels, queues and consumers. The
    connection is held here by a strong reference (robust objects are tracked weakly).
    """

    def __init__(self, amqp: AmqpSettings, *, connection_name: str | None = None, on_state: Any = None) -> None:
        assert amqp.url is not None
        self._amqp = amqp
        self._name = connection_name or amqp.connection_name
        self._connection: AbstractRobustConnection | None = None
        self._ready = asyncio.Event()
        self._on_state = on_state  # e.g. Metrics.set_consumer_connected
        self._closed = False
        self._up = False

    @property
    def connection(self) -> AbstractRobustConnection | None:
        return self._connection

    async def run(self, stopping: asyncio.Event) -> None:
        """Connect (retrying with backoff until it works or ``stopping`` is set), then hold on."""
        try:
            await self._connect(stopping)
            await stopping.wait()
        finally:
            self._ready.set()  # wakes wait_connected() callers, also when stopping before a connect

    async def _connect(self, stopping: asyncio.Event) -> None:
        attempt = 0
        while not stopping.is_set() and self._connection is None:
            try:
                connection = await aio_pika.connect_robust(
                    self._amqp.url.get_secret_value() if self._amqp.url else None,
                    reconnect_interval=self._amqp.reconnect_interval_seconds,
                    client_properties={"connection_name": self._name},
                    timeout=_CONNECT_TIMEOUT_SECONDS,
                )
            except Exception as exc:  # any failure to connect is retried; aiormq raises odd ones mid-handshake
                attempt += 1
                delay = min(_MAX_BACKOFF_SECONDS, self._amqp.reconnect_interval_seconds * 2 ** min(attempt - 1, 5))
                if attempt == 1 or attempt % 10 == 0:
                    log.warning(
                        "amqp.unreachable",
                        attempt=attempt,
                        error=str(exc) or type(exc).__name__,
                        retry_in_seconds=round(delay, 1),
                        hint="folder jobs keep running; events wait in the outbox",
                    )
                try:
                    async with asyncio.timeout(delay):
                        await stopping.wait()
                except TimeoutError:
                    pass
                continue
            if self._closed:
                await connection.close()
                return
            self._connection = connection
            connection.close_callbacks.add(self._lost)
            connection.reconnect_callbacks.add(self._reconnected)
            self._state(True)
            log.info("amqp.connected", attempts=attempt + 1, connection_name=self._name)
            self._ready.set()

    def _lost(self, *_: Any) -> None:
        # Called again for every failed reconnect attempt: report the outage once.
        if self._up and not self._closed:
            log.warning("amqp.connection_lost", reconnect_interval_seconds=self._amqp.reconnect_interval_seconds)
        self._state(False)

    def _reconnected(self, *_: Any) -> None:
        log.info("amqp.reconnected")
        self._state(True)

    def _state(self, connected: bool) -> None:
        self._up = connected
        if self._on_state is not None:
            self._on_state(connected)

    async def wait_connected(self, stopping: asyncio.Event) -> AbstractRobustConnection | None:
        """The connection once it first exists, or None if ``stopping`` is set before."""
        await self._ready.wait()
        return None if stopping.is_set() else self._connection

    async def healthy(self) -> bool:
        """True while the connection is open (the ``broker`` health check)."""
        conn = self._connection
        return conn is not None and not conn.is_closed and conn.connected.is_set()

    def status(self) -> str:
        """A short phrase for the systemd STATUS= line."""
        conn = self._connection
        if conn is None:
            return "waiting for broker"
        return "broker connected" if not conn.is_closed and conn.connected.is_set() else "broker reconnecting"

    async def aclose(self) -> None:
        """Close the connection (after the consumer and relay have stopped)."""
        self._closed = True
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
