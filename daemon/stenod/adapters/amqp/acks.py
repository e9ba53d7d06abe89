"""Acknowledgements for the request consumer, several per frame when that is safe.

Requests committed in one journal transaction finish together, so their acks are sent
together too: one ``basic.ack`` with ``multiple`` for the longest run of consecutive
delivery tags that are all done, starting at the oldest unsettled delivery, and single
acks for the rest. A delivery still in progress is never covered, so a slow request
(a URL being checked) holds back no other request's ack. Under load this halved the
frames (and socket writes) the consumer sends.

Delivery tags belong to one channel. After a reconnect the robust channel has a new one
whose tags start again at 1; deliveries of the old channel cannot be acked any more (the
broker has requeued them), and their ack fails as it did one at a time.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aio_pika.abc import AbstractIncomingMessage


class AckBatcher:
    """Tracks the consumer channel's unsettled deliveries and acks them in batches."""

    def __init__(self) -> None:
        self._channel: Any = None  # the aiormq channel the tags below belong to
        self._open: set[int] = set()  # delivered, not settled
        self._done: set[int] = set()  # done, ack not yet sent
        # Every tag up to here has been seen by ``delivered``: a multiple ack never reaches past
        # it, so a delivery whose handler has not started yet can never be covered.
        self._seen_upto = 0
        self._seen_early: set[int] = set()
        self._flush: asyncio.Future[BaseException | None] | None = None

    def delivered(self, message: AbstractIncomingMessage) -> None:
        """A delivery arrived (call before anything can settle it)."""
        if message.channel is not self._channel:
            self._channel = message.channel
            self._open.clear()
            self._done.clear()
            self._seen_upto = 0
            self._seen_early.clear()
        tag = message.delivery_tag
        if tag is None:
            return
        self._open.add(tag)
        self._seen_early.add(tag)
        while self._seen_upto + 1 in self._seen_early:
            self._seen_upto += 1
            self._seen_early.discard(self._seen_upto)

    def settled(self, message: AbstractIncomingMessage) -> None:
        """The delivery was settled another way (rejected), or will be by closing the channel."""
        if message.channel is self._channel and message.delivery_tag is not None:
            self._open.discard(message.delivery_tag)

    async def ack(self, message: AbstractIncomingMessage) -> None:
        """Ack the delivery, together with others done in the same turn of the loop.

        Raises what the channel raises (e.g. it was replaced by a reconnect)."""
        tag = message.delivery_tag
        if message.channel is not self._channel or tag is None or tag not in self._open:
            await message.ack()
            return
        self._done.add(tag)
        while tag in self._done:  # until a flush that took it has been sent
            if self._flush is not None:  # another handler is sending: wait for it, then look again
                error = await asyncio.shield(self._flush)
                if error is not None:
                    raise error
                continue
            self._flush = flush = asyncio.get_running_loop().create_future()
            error = None
            try:
                await asyncio.sleep(0)  # the handlers resumed by the same commit add theirs first
                await self._send()
            except Exception as exc:
                error = exc
            finally:
                self._flush = None
                flush.set_result(error)
            if error is not None:
                raise error

    async def _send(self) -> None:
        done, self._done = self._done, set()
        if not done:
            return
        channel = self._channel
        # The run of done tags from the oldest unsettled delivery: tags below it are settled.
        tag = min(self._open)
        top = None
        while tag in done and tag <= self._seen_upto:
            top = tag
            tag += 1
        self._open -= done
        for single in sorted(done):
            if top is None or single > top:
                await channel.basic_ack(single, wait=False)
        if top is not None:
            await channel.basic_ack(top, multiple=top > min(done), wait=False)
