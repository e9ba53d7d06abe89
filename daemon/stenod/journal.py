"""The job journal port: the values the dispatcher and sources exchange with it, and
the Protocol the dispatcher depends on (implemented by ``adapters.sqlite.journal``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from stenod.errors import ErrorInfo
from stenod.jobs import BatchState, ItemState, JobView


@dataclass(frozen=True, slots=True)
class NewItem:
    input: str
    name: str
    path: str | None = None
    size: int | None = None
    device: int | None = None
    inode: int | None = None
    content_hash: str | None = None
    reused_result: Mapping[str, Any] | None = None  # an earlier identical input's result
    task: str | None = None  # overrides of the job's, for a chained step
    provider: str | None = None
    target_languages: Sequence[str] | None = None
    options: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class NewJob:
    source: str
    task: str
    provider: str
    items: Sequence[NewItem]
    language: str | None = None
    target_languages: Sequence[str] = ()
    options: Mapping[str, Any] | None = None
    output: Mapping[str, Any] | None = None
    request_id: str | None = None
    reply_to: str | None = None
    correlation_id: str | None = None
    seen: tuple[str, str, int, int, int, int] | None = None  # (rule, path, dev, ino, size, mtime_ns)
    retry_of: str | None = None  # the job this one repeats (a retry from the page)


@dataclass(frozen=True, slots=True)
class OpenItem:
    """An item that needs the dispatcher: waiting to be packed, or with a reused result."""

    item_id: str
    job_id: str
    state: ItemState
    task: str
    provider: str
    language: str | None
    target_languages: tuple[str, ...]
    options: Mapping[str, Any]
    output: Mapping[str, Any]
    input: str
    name: str
    path: str | None
    size: int | None
    device: int | None
    inode: int | None
    result: Mapping[str, Any] | None
    created_at: str
    cancel_requested: bool


@dataclass(frozen=True, slots=True)
class BatchRow:
    batch_id: str
    provider: str
    state: BatchState
    handle: Mapping[str, Any] | None
    checkpoint: Mapping[str, Any] | None
    attempts: int
    next_at: float
    last_poll_at: float | None
    items: tuple[OpenItem, ...]


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    """What happened to one item: terminal state, files written, error, result."""

    item_id: str
    state: ItemState
    outputs: Sequence[str] = ()
    error: ErrorInfo | None = None
    result: Mapping[str, Any] | None = None
    cost: Mapping[str, Any] | None = None
    follow_up: NewItem | None = None  # a chained step added to the same job


@dataclass(frozen=True, slots=True)
class OutboxRow:
    seq: int
    event_id: str
    job_id: str
    routing_key: str
    body: str
    reply_to: str | None
    correlation_id: str | None


class JobJournal(Protocol):
    """What the dispatcher needs from the journal. Every call commits before it returns."""

    async def open_items(self, *, skip_providers: Sequence[str] = (), limit: int = 10_000) -> list[OpenItem]: ...
    async def active_batches(self) -> list[BatchRow]: ...
    async def batch(self, batch_id: str) -> BatchRow | None: ...
    async def create_batch(self, provider: str, item_ids: Sequence[str], *, next_at: float) -> BatchRow: ...
    async def save_checkpoint(self, batch_id: str, data: Mapping[str, Any]) -> None: ...
    async def batch_submitted(self, batch_id: str, handle: Mapping[str, Any], *, next_at: float) -> None: ...
    async def batch_polled(
        self, batch_id: str, *, running: bool, progress: float | None, next_at: float, poll_time: float
    ) -> list[str]: ...
    async def batch_state(self, batch_id: str, state: BatchState, *, next_at: float | None = None) -> None: ...
    async def batch_retry(self, batch_id: str, *, attempts: int, next_at: float, error: ErrorInfo) -> None: ...
    async def finish_items(
        self,
        outcomes: Sequence[ItemOutcome],
        *,
        batch_id: str | None = None,
        batch_state: BatchState | None = None,
        batch_error: ErrorInfo | None = None,
    ) -> None: ...
    async def set_progress(self, job_ids: Iterable[str], progress: float) -> None: ...
    async def emit_progress(self, job_id: str) -> None: ...
    async def cancel_requested_jobs(self) -> list[str]: ...
    async def job(self, job_id: str) -> JobView | None: ...
