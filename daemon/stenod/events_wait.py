"""Waiting on several asyncio events at once."""

from __future__ import annotations

import asyncio


async def first_of(*events: asyncio.Event) -> None:
    """Wait until any of the events is set."""
    async with asyncio.TaskGroup() as tg:
        waiters = [tg.create_task(e.wait(), name="wait-event") for e in events]
        done = asyncio.Event()
        for waiter in waiters:
            waiter.add_done_callback(lambda _: done.set())
        await done.wait()
        for waiter in waiters:
            waiter.cancel()
