"""The consumer's batched acks against the real broker: a delivery is acked only once its
handler is done, never covered by another's multiple ack, and a slow one holds no other back."""

from __future__ import annotations

import asyncio
import random

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from stenod.adapters.amqp.acks import AckBatcher
from support.amqp import BROKER_URL, BrokerNames

COUNT = 60


async def _run(held: set[int], rejected: set[int], seed: int | None) -> tuple[list[int], int]:
    """Consume COUNT messages; ack all but ``held`` (never settled) and ``rejected`` (requeued),
    finishing in bursts, in a shuffled order unless ``seed`` is None. Returns the bodies back in the queue after the
    channel closed, and how many ack frames were needed."""
    names = BrokerNames.new("acks")
    connection = await aio_pika.connect(BROKER_URL)
    async with connection:
        setup = await connection.channel()
        await setup.declare_queue(names.requests, durable=True)
        for n in range(COUNT):
            await setup.default_exchange.publish(aio_pika.Message(str(n).encode()), routing_key=names.requests)
        consumer = await connection.channel()
        await consumer.set_qos(prefetch_count=COUNT)
        queue = await consumer.get_queue(names.requests)
        acks = AckBatcher()
        arrived: list[AbstractIncomingMessage] = []
        all_in = asyncio.Event()
        frames = 0
        underlay = await consumer.get_underlay_channel()
        original = underlay.basic_ack

        async def counting_ack(*args: object, **kwargs: object) -> None:
            nonlocal frames
            frames += 1
            await original(*args, **kwargs)  # type: ignore[arg-type]

        underlay.basic_ack = counting_ack  # type: ignore[method-assign]

        async def on_message(message: AbstractIncomingMessage) -> None:
            acks.delivered(message)
            arrived.append(message)
            if len(arrived) == COUNT:
                all_in.set()

        await queue.consume(on_message)
        await asyncio.wait_for(all_in.wait(), 10)
        order = [m for m in arrived if int(m.body) not in held]
        if seed is not None:
            random.Random(seed).shuffle(order)
        for start in range(0, len(order), 7):  # bursts, as a journal commit group finishes them
            burst = order[start : start + 7]

            async def settle(message: AbstractIncomingMessage) -> None:
                if int(message.body) in rejected:
                    await message.reject(requeue=True)
                    acks.settled(message)
                else:
                    await acks.ack(message)

            await asyncio.gather(*(settle(m) for m in burst))
        await asyncio.sleep(0.3)  # a rejected one may be redelivered here: it stays unsettled
        await consumer.close()  # unsettled deliveries go back to the queue
        await asyncio.sleep(0.3)
        back: list[int] = []
        drain = await setup.get_queue(names.requests)
        while (message := await drain.get(no_ack=True, fail=False)) is not None:
            back.append(int(message.body))
        await setup.queue_delete(names.requests)
    return sorted(back), frames


async def test_deliveries_done_in_order_share_ack_frames() -> None:
    back, frames = await _run(held=set(), rejected=set(), seed=None)
    assert back == []
    assert frames <= COUNT // 7 + 1  # one per burst


async def test_every_done_delivery_is_acked_whatever_the_order() -> None:
    back, _ = await _run(held=set(), rejected=set(), seed=1)
    assert back == []


async def test_a_delivery_still_in_progress_is_never_covered_and_holds_no_other_back() -> None:
    held = {0, 17, 41}  # the oldest among them: every multiple ack would reach past it
    back, _ = await _run(held=held, rejected=set(), seed=2)
    assert back == sorted(held)


async def test_rejected_deliveries_go_back_and_the_rest_are_acked() -> None:
    rejected = {3, 4, 30}
    back, _ = await _run(held={10}, rejected=rejected, seed=3)
    assert back == sorted(rejected | {10})
