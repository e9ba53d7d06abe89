"""A request's delivery count given back when a daemon that died with it, not the request,
used it up.

RabbitMQ 3.x's quorum queues count every return of a delivery toward ``x-delivery-limit``:
the ones the daemon asks for (a transient failure to record the request: requeued) and the
ones it cannot help (killed, or its connection lost, with the request delivered and not yet
recorded). A daemon killed again and again before it records its prefetched requests (a
crash loop) would have the broker dead-letter healthy requests it never failed (the chaos
run on seed 1179383388: 32 dead-lettered, 10 never run).

So a delivery arriving on its last allowed attempt that this process has not failed itself
is published again as a new message (confirmed) and the delivery acked: its count starts
again, at the queue's tail. The returns it had are carried in ``x-stenod-returns``; once
they pass ``RETURN_ROUNDS`` times the limit it is left to the broker's limit, so a request
that itself brings the daemon down is still dead-lettered in the end. A request this
process failed (requeued) is never renewed: a journal that cannot record it (a full disk)
dead-letters it after the limit, as promised.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

__all__ = ["RETURNS_HEADER", "RETURN_ROUNDS", "Returns", "copy_of"]

RETURNS_HEADER = "x-stenod-returns"
RETURN_ROUNDS = 10
_REMEMBERED = 10_000  # requests this process failed, newest kept


class Returns:
    """Which deliveries to publish again, and the copy to publish."""

    def __init__(self, delivery_limit: int) -> None:
        self._limit = delivery_limit
        self._failed: OrderedDict[str, None] = OrderedDict()

    def failed(self, message: AbstractIncomingMessage) -> None:
        """This process requeued ``message`` (a failure it saw): its count is its own."""
        key = _key(message)
        self._failed[key] = None
        self._failed.move_to_end(key)
        while len(self._failed) > _REMEMBERED:
            self._failed.popitem(last=False)

    def due(self, message: AbstractIncomingMessage) -> bool:
        """True if ``message`` is on its last allowed delivery, for returns this process did
        not cause, and may be renewed once more."""
        headers = message.headers or {}
        count = _int(headers.get("x-delivery-count"))
        if count < self._limit - 1 or _key(message) in self._failed:
            return False
        return _int(headers.get(RETURNS_HEADER)) + count < RETURN_ROUNDS * self._limit

    @staticmethod
    def renewed(message: AbstractIncomingMessage) -> aio_pika.Message:
        """The same request as a new message, carrying the returns it has had."""
        headers = dict(message.headers or {})
        count = _int(headers.pop("x-delivery-count", 0))
        headers[RETURNS_HEADER] = _int(headers.get(RETURNS_HEADER)) + count
        return copy_of(message, headers=headers, message_id=message.message_id, timestamp=message.timestamp)

    @staticmethod
    def returns(message: AbstractIncomingMessage) -> int:
        """Returns the request had before this delivery, over all its renewals."""
        headers = message.headers or {}
        return _int(headers.get(RETURNS_HEADER)) + _int(headers.get("x-delivery-count"))


def copy_of(
    message: AbstractIncomingMessage, *, headers: dict[str, Any], message_id: str | None, timestamp: Any = None
) -> aio_pika.Message:
    """A persistent message with a delivery's body and properties and these headers (a request
    published again, or moved to the dead-letter exchange)."""
    return aio_pika.Message(
        body=message.body,
        headers=headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        type=message.type,
        message_id=message_id,
        timestamp=timestamp,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


def _key(message: AbstractIncomingMessage) -> str:
    return message.message_id or hashlib.sha256(message.body).hexdigest()


def _int(value: Any) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0
