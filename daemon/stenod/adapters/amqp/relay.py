"""The event relay: publishes the journal's outbox to the event exchange, confirmed.

Rows go out in ``seq`` order (pipelined on one channel, so the broker receives them in
that order) as persistent CloudEvents with ``message_id`` = event id; a row is deleted
only after the broker confirmed it. While the broker is down rows wait in the outbox and
the daemon carries on. Unroutable events are caught by the exchange's alternate exchange
(``<exchange>.unrouted``); if even that fails the broker returns the event, which stays in
the outbox with an ``amqp.event_unroutable`` warning. Terminal events of a request that
had ``reply_to`` are also sent to that queue with its ``correlation_id`` (best effort: a
reply queue that is gone is logged, not retried forever).

It runs in its own process (:mod:`stenod.adapters.amqp.relay_process`), so publishing uses the
second core instead of competing with intake for the daemon's one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol, cast

import aio_pika
import aiormq
import structlog
from aio_pika.abc import AbstractExchange, AbstractRobustChannel
from aiormq.exceptions import PublishError
from pamqp import commands as spec

from stenod.adapters.amqp.topology import BrokerLink, declare_events, open_channel
from stenod.events import CONTENT_TYPE
from stenod.journal import OutboxRow
from stenod.settings import AmqpSettings

log = structlog.get_logger("stenod.amqp")

_AMQP_ERRORS = (aio_pika.exceptions.AMQPError, ConnectionError, OSError, RuntimeError)
_IDLE_SECONDS = 5.0
_CLOSE_SECONDS = 5.0


class Outbox(Protocol):
    """The outbox as the relay sees it: rows in ``seq`` order, and where confirmations go."""

    @property
    def ready(self) -> asyncio.Event:
        """Set when rows may have been added."""
        ...

    async def batch(self, limit: int) -> list[OutboxRow]:
        """The oldest rows not yet confirmed, in ``seq`` order."""
        ...

    async def confirmed(self, seqs: Sequence[int]) -> None:
        """The broker confirmed these rows: they may be deleted."""
        ...


class OutboxRelay:
    """Moves committed events from the outbox to RabbitMQ; one instance per daemon."""

    def __init__(self, link: BrokerLink, outbox: Outbox, amqp: AmqpSettings, *, batch_size: int = 500) -> None:
        self._link = link
        self._outbox = outbox
        self._amqp = amqp
        self._batch_size = batch_size
        # Strong references: aio-pika tracks robust channels weakly.
        self._channel: AbstractRobustChannel | None = None
        self._exchange: AbstractExchange | None = None

    async def run(self, stopping: asyncio.Event) -> None:
        """Publish until ``stopping``. Rows not yet confirmed stay for the next run."""
        connection = await self._link.wait_connected(stopping)
        if connection is None:
            return
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._wake_on(stopping), name="relay:stop")
            while not stopping.is_set():
                try:
                    if self._exchange is None:
                        channel = await open_channel(connection)
                        self._exchange = await declare_events(channel, self._amqp)
                        self._channel = channel
                        log.info("amqp.relay_ready", exchange=self._amqp.event_exchange)
                    await self._pump(stopping)
                except (*_AMQP_ERRORS, TimeoutError) as exc:
                    log.warning("amqp.relay_interrupted", error=str(exc) or type(exc).__name__)
                    await self._pause(stopping, self._amqp.reconnect_interval_seconds)
        if self._channel is not None:
            try:
                async with asyncio.timeout(_CLOSE_SECONDS):  # a robust channel waits for the broker
                    await self._channel.close()
            except (*_AMQP_ERRORS, TimeoutError) as exc:
                log.debug("amqp.channel_close_failed", error=str(exc) or type(exc).__name__)

    async def _wake_on(self, stopping: asyncio.Event) -> None:
        await stopping.wait()
        self._outbox.ready.set()

    async def _pause(self, stopping: asyncio.Event, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                await stopping.wait()
        except TimeoutError:
            pass

    async def _pump(self, stopping: asyncio.Event) -> None:
        ready = self._outbox.ready
        while not stopping.is_set():
            ready.clear()  # before reading: a commit after the read sets it again
            rows = await self._outbox.batch(self._batch_size)
            if not rows:
                try:
                    async with asyncio.timeout(_IDLE_SECONDS):
                        await ready.wait()
                except TimeoutError:
                    pass
                continue
            done = await self._publish(rows)
            if done:
                await self._outbox.confirmed(done)
            if len(done) < len(rows):
                await self._pause(stopping, min(self._amqp.reconnect_interval_seconds, 2.0))

    async def _publish(self, rows: Sequence[OutboxRow]) -> list[int]:
        """Publish rows pipelined; returns the seqs the broker confirmed."""
        assert self._channel is not None
        # aiormq's channel directly: aio-pika's Message and Exchange layers cost a third of
        # the CPU of each publish, and its publish waits for every frame to reach the
        # socket before the next may go (``wait=False`` lets the batch share one write).
        # The robust channel's own wrapper waits for a reconnect, within our timeout.
        async with asyncio.timeout(self._amqp.publish_timeout_seconds):
            # aio-pika 10 requires aiormq 7.2.4+, whose Channel.basic_publish takes ``wait``.
            underlay = cast(aiormq.Channel, await self._channel.get_underlay_channel())
        results = await asyncio.gather(*(self._publish_row(underlay, row) for row in rows), return_exceptions=True)
        done: list[int] = []
        failed: BaseException | None = None
        for row, result in zip(rows, results, strict=True):
            if result is True:
                done.append(row.seq)
            elif isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result
                failed = failed or result
        if failed is not None:
            log.warning(
                "amqp.publish_failed",
                failed=len(rows) - len(done),
                confirmed=len(done),
                error=str(failed) or type(failed).__name__,
            )
        return done

    async def _publish_row(self, channel: aiormq.Channel, row: OutboxRow) -> bool:
        """Publish one event, confirmed (aiormq raises on a nack, a return or the timeout)."""
        body = row.body.encode("utf-8")
        try:
            await self._confirmed_publish(channel, body, self._amqp.event_exchange, row.routing_key, row)
        except PublishError:
            log.warning(
                "amqp.event_unroutable",
                routing_key=row.routing_key,
                event_id=row.event_id,
                hint=f"bind a queue to {self._amqp.event_exchange} or restore its alternate exchange",
            )
            return False
        if row.reply_to:
            try:
                await self._confirmed_publish(channel, body, "", row.reply_to, row, correlation_id=row.correlation_id)
            except PublishError:
                log.info("amqp.reply_unroutable", reply_to=row.reply_to, event_id=row.event_id)
        return True

    async def _confirmed_publish(
        self,
        channel: aiormq.Channel,
        body: bytes,
        exchange: str,
        routing_key: str,
        row: OutboxRow,
        *,
        correlation_id: str | None = None,
    ) -> None:
        await channel.basic_publish(
            body,
            exchange=exchange,
            routing_key=routing_key,
            properties=self._properties(row, correlation_id=correlation_id),
            mandatory=True,
            timeout=self._amqp.publish_timeout_seconds,
            wait=False,
        )

    @staticmethod
    def _properties(row: OutboxRow, *, correlation_id: str | None = None) -> spec.Basic.Properties:
        kind = row.routing_key.split(".")[1] if row.routing_key.count(".") >= 1 else "event"
        return spec.Basic.Properties(
            content_type=CONTENT_TYPE,
            delivery_mode=2,  # persistent
            message_id=row.event_id,
            message_type=f"stenod.job.{kind}",
            app_id="stenod",
            correlation_id=correlation_id,
        )
