"""The AMQP source: consumes requests and cancels from the request queue; the core's
request intake (:mod:`stenod.intake.request_intake`) decides what each one becomes.

A message is acked only after its job is committed to the journal (then the journal
owns it and it runs without holding the message, so the broker's consumer timeout never
fires). A message that can never succeed is published, with the reason in our own
``x-stenod-*`` headers, to the dead-letter exchange (confirmed) and only then acked, and
a ``stenod.job.rejected`` event says why. A transient failure (the journal commit failed)
is rejected with ``requeue=True``, which counts toward the queue's delivery limit. A delivery
on its last allowed attempt for returns this process did not cause (a crash loop) has its
count started again (:mod:`~stenod.adapters.amqp.returns`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage, AbstractQueue, AbstractRobustChannel
from ulid import ULID

from stenod.adapters.amqp.acks import AckBatcher
from stenod.adapters.amqp.relay_process import RelayProcess
from stenod.adapters.amqp.returns import Returns, copy_of
from stenod.adapters.amqp.topology import BrokerLink, declare_requests, open_channel
from stenod.errors import Rejected
from stenod.events import utc_now
from stenod.fault_points import REQUEST_DELIVERED, pause_at, sigterm_at
from stenod.intake.request_intake import Accepted, Delivery, RequestIntake
from stenod.journal import Journal
from stenod.settings import AmqpSettings, Settings

log = structlog.get_logger("stenod.amqp")

FAULT_EXIT_AFTER_COMMIT = "STENOD_FAULT_EXIT_AFTER_COMMIT"
"""Test hook: with this environment variable set to 1 the daemon exits (code 99) right after
committing a new job and before acking its message, to prove the redelivery is harmless."""

_RETRY_PAUSE_SECONDS = 1.0
_CLOSE_SECONDS = 5.0
_AMQP_ERRORS = (aio_pika.exceptions.AMQPError, ConnectionError, OSError, RuntimeError)


class AmqpSource:
    """Consumes the request queue with a callback consumer on the shared robust connection."""

    name = "amqp"

    def __init__(
        self,
        link: BrokerLink,
        intake: RequestIntake,
        amqp: AmqpSettings,
        *,
        notify: Callable[[], None],
        on_urls: Callable[[], None] | None = None,
        grace_seconds: float = 10.0,
    ) -> None:
        self._link = link
        self._intake = intake
        self._amqp = amqp
        self._notify = notify
        self._on_urls = on_urls
        self._grace = grace_seconds
        self._fault_exit = os.environ.get(FAULT_EXIT_AFTER_COMMIT) == "1"
        # Strong references: aio-pika tracks robust channels and queues weakly.
        self._channel: AbstractRobustChannel | None = None
        self._queue: AbstractQueue | None = None
        self._dlx: AbstractExchange | None = None
        self._acks = AckBatcher()
        self._returns = Returns(amqp.delivery_limit)
        self._renewing = asyncio.Lock()  # no delivery is processed while one is being renewed
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = asyncio.Event()

    async def run(self, stopping: asyncio.Event) -> None:
        """Consume until ``stopping``; then cancel the consumer and let in-flight messages settle."""
        self._stopping = stopping
        connection = await self._link.wait_connected(stopping)
        if connection is None:
            return
        sigterm_at("amqp.connected")
        tag = await self._start(connection, stopping)
        await stopping.wait()
        if self._channel is None:
            return
        if tag is None:  # stopped while the channel was being opened, or the consumer started: nothing was consumed
            await self._close_channel(self._channel)
            return
        assert self._queue is not None
        try:
            # aio-pika's own timeout does not cover waiting for a robust channel to be
            # restored: with the broker away that wait never ends, and neither would we.
            async with asyncio.timeout(_CLOSE_SECONDS):
                await self._queue.cancel(tag, timeout=_CLOSE_SECONDS)
        except (*_AMQP_ERRORS, TimeoutError) as exc:
            log.warning("amqp.cancel_consumer_failed", error=str(exc) or type(exc).__name__)
        try:
            async with asyncio.timeout(self._grace):
                await self._idle.wait()
        except TimeoutError:
            log.warning("amqp.intake_grace_expired", in_flight=self._in_flight)
        await self._close_channel(self._channel)
        log.info("amqp.consumer_stopped")

    @staticmethod
    async def _close_channel(channel: AbstractRobustChannel) -> None:
        # Unsettled deliveries go back to the queue when the channel closes.
        try:
            async with asyncio.timeout(_CLOSE_SECONDS):
                await channel.close()
        except (*_AMQP_ERRORS, TimeoutError) as exc:
            log.debug("amqp.channel_close_failed", error=str(exc) or type(exc).__name__)

    async def _start(self, connection: Any, stopping: asyncio.Event) -> str | None:
        """Open the channel, declare the topology and start consuming; retried until it works."""
        while not stopping.is_set():
            try:
                channel = await open_channel(connection)
                await channel.set_qos(prefetch_count=self._amqp.prefetch)
                queue, dlx = await declare_requests(channel, self._amqp)
                self._channel, self._queue, self._dlx = channel, queue, dlx
                if stopping.is_set():  # SIGTERM came while the channel opened: take no request now
                    return None
                sigterm_at("amqp.consume")
                tag = await queue.consume(self._on_message)
                if stopping.is_set():
                    # SIGTERM came while the broker started the consumer (a round trip that
                    # cannot be called back): it has started nothing (_on_message takes no
                    # delivery once stopping) and goes with the channel, which returns its
                    # deliveries to the queue. It never was a consumer of this daemon.
                    log.info("amqp.consumer_withdrawn", queue=self._amqp.request_queue)
                    return None
                log.info("amqp.consuming", queue=self._amqp.request_queue, prefetch=self._amqp.prefetch)
                return str(tag)
            except (*_AMQP_ERRORS, TimeoutError) as exc:
                log.error(
                    "amqp.declare_failed",
                    queue=self._amqp.request_queue,
                    error=str(exc) or type(exc).__name__,
                    hint="if the queue exists with other arguments, delete it or change amqp.request_queue",
                )
                try:
                    async with asyncio.timeout(max(5.0, self._amqp.reconnect_interval_seconds)):
                        await stopping.wait()
                except TimeoutError:
                    pass
        return None

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self._acks.delivered(message)
        if self._stopping.is_set():
            # Delivered after SIGTERM (prefetched, or the consumer started just before it): do
            # not start it. Left unsettled, it returns to the queue when the channel closes.
            return
        self._in_flight += 1
        self._idle.clear()
        try:
            if self._returns.due(message):
                async with self._renewing:
                    if await self._renew(message):
                        return
            elif self._renewing.locked():
                async with self._renewing:
                    pass
            pause_at(REQUEST_DELIVERED)
            await self._process(message)
        except asyncio.CancelledError:
            raise
        except Exception:  # never let one message take the consumer down; the broker redelivers it
            log.exception("amqp.message_failed", message_id=message.message_id)
            await self._settle(message, "requeue")
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def _renew(self, message: AbstractIncomingMessage) -> bool:
        """Publish the request again as a new message (its delivery count starts over), then
        ack this delivery. False if the publish failed: then this delivery is processed."""
        assert self._channel is not None
        try:
            await self._channel.default_exchange.publish(
                self._returns.renewed(message),
                routing_key=self._amqp.request_queue,
                mandatory=True,
                timeout=self._amqp.publish_timeout_seconds,
            )
        except (*_AMQP_ERRORS, TimeoutError) as exc:
            log.warning("amqp.renew_failed", message_id=message.message_id, error=str(exc) or type(exc).__name__)
            return False
        await self._settle(message, "ack")
        try:
            # A round trip after the ack: the broker has taken it before this daemon starts
            # on the copy (frames on a channel are handled in order). Until then the two
            # exist side by side, and a death now would dead-letter the original.
            await self._channel.set_qos(prefetch_count=self._amqp.prefetch)
        except (*_AMQP_ERRORS, TimeoutError) as exc:
            log.info("amqp.renew_unconfirmed", error=str(exc) or type(exc).__name__)
        log.warning(
            "amqp.delivery_count_renewed",
            message_id=message.message_id,
            returns=self._returns.returns(message),
            hint="daemons were stopped or lost their broker connection with this request in flight, again and again",
        )
        return True

    async def _process(self, message: AbstractIncomingMessage) -> None:
        delivery = Delivery(
            body=message.body,
            message_id=message.message_id,
            reply_to=message.reply_to,
            correlation_id=message.correlation_id,
            type=message.type,
            content_encoding=message.content_encoding,
        )
        outcome = await self._intake.handle(delivery)
        if isinstance(outcome, Accepted):
            if outcome.created and self._fault_exit:
                os._exit(99)
            await self._settle(message, "ack")
            log.info(
                "job.accepted" if outcome.created else "amqp.request_seen",
                job_id=outcome.job_id,
                redelivered=message.redelivered,
            )
            self._notify()
            if outcome.urls and self._on_urls is not None:
                self._on_urls()
        elif isinstance(outcome, Rejected):
            await self._dead_letter(message, delivery, outcome)
        else:
            await asyncio.sleep(_RETRY_PAUSE_SECONDS)
            await self._settle(message, "requeue")

    async def _dead_letter(self, message: AbstractIncomingMessage, delivery: Delivery, rejected: Rejected) -> None:
        log.warning(
            "amqp.request_rejected",
            code=rejected.code,
            reason=rejected.reason,
            request_id=rejected.request_id,
            message_id=message.message_id,
            redelivered=message.redelivered,
        )
        try:
            await self._intake.reject_event(rejected, delivery)
        except Exception as exc:
            log.error("amqp.commit_failed", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(_RETRY_PAUSE_SECONDS)
            await self._settle(message, "requeue")
            return
        headers = dict(message.headers or {})
        headers.update(
            {
                "x-stenod-error-code": rejected.code,
                "x-stenod-reason": rejected.reason[:1000],
                "x-stenod-rejected-at": utc_now(),
                "x-original-queue": self._amqp.request_queue,
                "x-original-message-id": message.message_id or "",
            }
        )
        copy = copy_of(message, headers=headers, message_id=str(ULID()))
        assert self._dlx is not None
        try:
            await self._dlx.publish(
                copy,
                routing_key=self._amqp.dead_letter_queue,
                mandatory=True,
                timeout=self._amqp.publish_timeout_seconds,
            )
        except (*_AMQP_ERRORS, TimeoutError) as exc:
            # Not acked: the broker redelivers it and the next attempt dead-letters it again.
            log.error("amqp.dead_letter_failed", error=str(exc) or type(exc).__name__)
            await self._settle(message, "requeue")
            return
        await self._settle(message, "ack")

    async def _settle(self, message: AbstractIncomingMessage, how: str) -> None:
        try:
            if how == "ack":
                await self._acks.ack(message)
            else:
                self._returns.failed(message)
                try:
                    await message.reject(requeue=True)
                finally:
                    self._acks.settled(message)
        except _AMQP_ERRORS as exc:
            # The channel was replaced by a reconnect: the broker has requeued this delivery
            # and will redeliver it; request_id idempotency makes that harmless.
            log.info("amqp.settle_after_reconnect", how=how, error=type(exc).__name__)


@dataclass(frozen=True, slots=True)
class AmqpParts:
    """The queue interface's components, for the composition root."""

    link: BrokerLink
    source: AmqpSource
    relay: RelayProcess

    async def aclose(self) -> None:
        """After the TaskGroup ended: close the broker connection."""
        await self.link.aclose()

    @property
    def services(self) -> list[Callable[[asyncio.Event], Coroutine[Any, Any, None]]]:
        return [self.link.run, self.relay.run]


def build_amqp(
    settings: Settings,
    journal: Journal,
    intake: RequestIntake,
    notify: Callable[[], None],
    *,
    on_urls: Callable[[], None],
    metrics: Any = None,
) -> AmqpParts:
    """Wire the broker link, request consumer and outbox relay from the settings.

    The caller runs ``services`` in its TaskGroup, adds ``source`` to its sources and calls
    ``aclose`` after the TaskGroup ended.
    """
    amqp = settings.amqp
    link = BrokerLink(amqp, on_state=getattr(metrics, "set_consumer_connected", None))
    source = AmqpSource(
        link,
        intake,
        amqp,
        notify=notify,
        on_urls=on_urls,
        grace_seconds=min(10.0, settings.shutdown_grace_seconds),
    )
    relay = RelayProcess(settings, journal, metrics=metrics)
    return AmqpParts(link, source, relay)
