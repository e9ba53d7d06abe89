"""ScriptedProvider: a provider for core tests that returns or raises scripted outcomes
in order, records every call with its time, and can block until cancelled."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeAlias, TypeVar

from pydantic import BaseModel, ConfigDict

from stenod.provider import (
    Batch,
    Handle,
    ItemResult,
    Limits,
    ProviderSettings,
    RemoteState,
    Segment,
    Status,
    StepContext,
    Task,
    Transcript,
)

T = TypeVar("T")
Outcome: TypeAlias = T | BaseException | Callable[[], T | BaseException]
"""A value to return, an exception to raise, or a callable producing either."""


class ScriptedOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tag: str | None = None


@dataclass
class Call:
    operation: str
    at: float
    args: Any = None


@dataclass
class ScriptedProvider:
    name: ClassVar[str] = "scripted"
    Settings: ClassVar[type[ProviderSettings]] = ProviderSettings
    Options: ClassVar[type[BaseModel]] = ScriptedOptions

    limits: Limits = field(
        default_factory=lambda: Limits(
            tasks=frozenset({Task.TRANSCRIBE}), formats=frozenset({"wav", "mp3"}), max_files=10, min_poll_seconds=0.0
        )
    )
    submits: deque[Outcome[Handle]] = field(default_factory=deque)
    polls: deque[Outcome[Status]] = field(default_factory=deque)
    fetches: deque[Outcome[Sequence[ItemResult]]] = field(default_factory=deque)
    calls: list[Call] = field(default_factory=list)
    batches: list[Batch] = field(default_factory=list)
    block_submit: asyncio.Event | None = None  # submit waits for this (to test shutdown/crash)
    on_release: Callable[[], Any] | None = None  # evaluated when release() is called
    checkpoint_before_block: bool = True

    def of(self, operation: str) -> list[Call]:
        return [c for c in self.calls if c.operation == operation]

    @staticmethod
    async def _play(queue: deque[Outcome[T]], default: Callable[[], T]) -> T:
        outcome = queue.popleft() if queue else default()
        if callable(outcome):
            outcome = outcome()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def submit(self, batch: Batch, ctx: StepContext) -> Handle:
        self.calls.append(Call("submit", time.time(), ctx.saved))
        self.batches.append(batch)
        if ctx.saved is None and self.checkpoint_before_block:
            await ctx.checkpoint({"remote": f"r-{batch.batch_id}"})
        if self.block_submit is not None:
            await self.block_submit.wait()
        remote = (ctx.saved or {}).get("remote", f"r-{batch.batch_id}")
        return await self._play(
            self.submits, lambda: {"remote": remote, "items": [[i.item_id, i.name] for i in batch.items]}
        )

    async def poll(self, handle: Handle) -> Status:
        self.calls.append(Call("poll", time.time(), handle))
        return await self._play(self.polls, lambda: Status(RemoteState.DONE, progress=1.0))

    async def fetch(self, handle: Handle) -> Sequence[ItemResult]:
        self.calls.append(Call("fetch", time.time(), handle))
        return await self._play(
            self.fetches,
            lambda: [
                ItemResult(
                    item_id,
                    transcript=Transcript(
                        f"text of {name}", "en", 1.0, (Segment(0.0, 1.0, f"text of {name}"),), provider="scripted"
                    ),
                )
                for item_id, name in handle["items"]
            ],
        )

    async def cancel(self, handle: Handle) -> None:
        self.calls.append(Call("cancel", time.time(), handle))

    async def release(self, handle: Handle) -> None:
        self.calls.append(Call("release", time.time(), self.on_release() if self.on_release else handle))
