"""The job journal port: the values the dispatcher and sources exchange with it, and
the Protocols they depend on (implemented by ``adapters.sqlite`` and ``adapters.postgres``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from stenod.corrections import EditableItem
from stenod.errors import ErrorInfo, LeaseExpired
from stenod.events import JobEvent
from stenod.jobs import BatchState, ItemState, JobView
from stenod.output_spec import OutputSpec
from stenod.speakers import Diarization
from stenod.who_spoke.voices import VoiceJournal


@dataclass(frozen=True, slots=True)
class Unsettled:
    """A file an earlier attempt at an item announced (recorded before its write) and never
    recorded as written: that attempt ended between the two (a kill, a lost lease). The file
    may be on disk. ``since``: when it was announced, in seconds since the epoch."""

    key: str
    since: float


@dataclass(frozen=True, slots=True)
class Held:
    """A provider job's lease as a renewal left it: certainly this instance's until
    ``until`` (``time.monotonic()``; infinite where no other instance can take it).

    Files are outside the journal's transactions, so no fence can refuse them: the writer
    calls :meth:`check` before each file goes into place, and a process paused past the
    lease (whose clock ran on meanwhile) stops there instead of writing for a job another
    instance may be finishing."""

    batch_id: str
    until: float
    unsettled: Mapping[str, Sequence[Unsettled]] = field(default_factory=dict)  # by item id

    def check(self) -> None:
        """Raise LeaseExpired once the lease may have run out."""
        if time.monotonic() >= self.until:
            raise LeaseExpired(self.batch_id)


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
    result: Mapping[str, Any] | None = None  # its own, for a job finished before it is journaled
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
    output: OutputSpec | None = None  # None: the defaults (stored as {})
    request_id: str | None = None
    reply_to: str | None = None
    correlation_id: str | None = None
    seen: tuple[str, str, int, int, int, int] | None = None  # (rule, path, dev, ino, size, mtime_ns)
    retry_of: str | None = None  # the job this one repeats (a retry from the page)
    diarization: Diarization | None = None  # who spoke, when the request asked


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
    output: OutputSpec
    input: str
    name: str
    path: str | None
    size: int | None
    device: int | None
    inode: int | None
    result: Mapping[str, Any] | None
    created_at: str
    cancel_requested: bool
    origin: str | None = None  # the instance that accepted the job (its files are readable there)
    diarization: Diarization | None = None  # the job's: items asking differently go in different provider jobs


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
    holder: str | None = None  # the instance stepping it
    lease_until: float | None = None  # when another instance may take it over (epoch seconds)
    lease_gen: int = 0  # raised by every claim: the fencing token of the holder's writes


@dataclass(frozen=True, slots=True)
class OutputFile:
    """A file stenod wrote: where (as written, and ``key``: the path with its folder's
    symlinks resolved, the same spelling whichever way the folder was named), and the size
    and mtime it had, so that a watched folder knows it for stenod's own and a file a user
    later puts under the same name for new work."""

    path: str
    key: str
    size: int
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class OwnOutput:
    """The journal's record of a path stenod writes to: the size and mtime it wrote, or
    None for both while the file is being written (recorded before the write)."""

    size: int | None
    mtime_ns: int | None

    def matches(self, size: int, mtime_ns: int) -> bool:
        return (self.size, self.mtime_ns) == (size, mtime_ns)


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    """What happened to one item: terminal state, files written, error, result."""

    item_id: str
    state: ItemState
    outputs: Sequence[OutputFile] = ()
    error: ErrorInfo | None = None
    result: Mapping[str, Any] | None = None
    cost: Mapping[str, Any] | None = None
    follow_up: NewItem | None = None  # a chained step added to the same job


@dataclass(frozen=True, slots=True)
class FinishedJob:
    """A finished HTTP job (or a voice command kept from the Wyoming listener), for the
    keeper of uploads' results: when it ended, where its outputs went."""

    job_id: str
    finished_at: str
    output_dir: str | None
    source: str = "http"


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
    """What the dispatcher needs from the journal. Every call commits before it returns.

    Provider jobs are held under leases: a journal object is one instance (``instance_id``);
    it holds the provider jobs it created or claimed, and every write about one of them
    checks and renews its lease in the same transaction, or raises :class:`LeaseLost` with
    nothing written.

    Files are written outside the journal's transactions, so the journal records them on both
    sides of the write: their paths before (``hold``, or ``expect_outputs`` for an item of no
    provider job), their size and mtime after (``finish_items``, ``record_outputs``). A
    watched folder asks ``own_output`` and never takes one of stenod's files for an input,
    also one that is being written, also one another instance wrote."""

    instance_id: str
    lease_seconds: float
    shared: bool  # other instances may use the same journal (PostgreSQL)

    async def open_items(self, *, skip_providers: Sequence[str] = (), limit: int = 10_000) -> list[OpenItem]: ...
    async def claim_batches(self, providers: Sequence[str], *, own: bool = False) -> list[BatchRow]: ...
    async def renew_leases(self) -> list[str]: ...
    async def hold(self, batch_id: str, *, outputs: Mapping[str, Sequence[str]] | None = None) -> Held: ...
    async def expect_outputs(self, outputs: Mapping[str, Sequence[str]]) -> Mapping[str, Sequence[Unsettled]]: ...
    async def release_leases(self) -> None: ...
    async def next_expiry(self, providers: Sequence[str]) -> float | None: ...
    async def pause_provider(self, provider: str, seconds: float) -> None: ...
    async def provider_pauses(self) -> dict[str, float]: ...  # provider -> seconds still paused
    async def batch(self, batch_id: str) -> BatchRow | None: ...
    async def create_batch(
        self, provider: str, item_ids: Sequence[str], *, next_at: float, max_jobs: int | None = None
    ) -> BatchRow | None: ...
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
    async def set_progress(self, job_ids: Iterable[str], progress: float, *, batch_id: str | None = None) -> None: ...
    async def emit_progress(self, job_id: str, *, batch_id: str | None = None) -> None: ...
    async def cancel_requested_jobs(self) -> list[str]: ...
    async def job(self, job_id: str) -> JobView | None: ...


def accepted_elsewhere(journal: JobJournal, item: OpenItem) -> bool:
    """The item's job was accepted by another instance sharing the journal: its files are
    where that instance put or saw them, which this one may not see (never so on SQLite)."""
    return journal.shared and item.origin is not None and item.origin != journal.instance_id


class Journal(JobJournal, VoiceJournal, Protocol):
    """The whole journal, as the sources, the relay and the HTTP server use it; both
    journal adapters (SQLite and PostgreSQL) implement it, and one contract suite
    (``tests/contract``) runs against each."""

    outbox_ready: asyncio.Event  # set after a commit that may have added outbox rows
    on_change: Callable[[set[str]], None] | None  # told the jobs whose events a commit added
    on_entered: Callable[[Sequence[tuple[str, str]]], None] | None  # each (provider, state) a commit entered

    async def ping(self) -> bool: ...  # the journal can be used now (``/healthz``)
    async def alive(self) -> bool: ...  # this process's part of it responds (the watchdog)
    def disk_full(self) -> str | None: ...  # where writes wait for disk space now (file or database), else None
    async def aclose(self) -> None: ...

    # intake
    async def create_job(self, new: NewJob) -> tuple[JobView, bool]: ...
    async def record_finished_job(self, new: NewJob) -> JobView: ...  # finished already (a voice command kept)
    async def seen(self, rule: str, path: str, device: int, inode: int, size: int, mtime_ns: int) -> bool: ...
    async def forget_seen(self, rule: str, path: str) -> None: ...
    async def record_seen(self, rule: str, path: str, device: int, inode: int, size: int, mtime_ns: int) -> None: ...
    async def reusable_result(
        self,
        content_hash: str,
        provider: str,
        task: str,
        language: str | None,
        target_languages: Sequence[str],
        options: Mapping[str, Any],
        diarization: Diarization | None = None,
    ) -> Mapping[str, Any] | None: ...
    async def attach_download(self, item_id: str, path: str, size: int, device: int, inode: int) -> None: ...
    async def release_items(self, batch_id: str, item_ids: Sequence[str]) -> None: ...

    # cancel, corrections, retries
    async def request_cancel(self, job_id: str) -> JobView | None: ...
    async def save_edit(self, item_id: str, transcript: Mapping[str, Any] | None) -> None: ...
    async def record_outputs(self, item_id: str, files: Sequence[OutputFile]) -> None: ...
    async def editable_item(self, job_id: str, index: int) -> EditableItem | None: ...
    async def retry_links(self, job_id: str) -> tuple[str | None, list[str]]: ...
    async def repeat_of(self, job_id: str) -> NewJob | None: ...

    # reads
    async def job_by_request(self, request_id: str) -> JobView | None: ...
    async def jobs(
        self, state: str | None = None, limit: int = 50, *, provider: str | None = None, before: str | None = None
    ) -> list[JobView]: ...
    async def events(self, job_id: str, *, after: int = 0, limit: int = 500) -> list[tuple[int, str]]: ...
    async def event_seq(self, job_id: str, event_id: str) -> int | None: ...
    async def live_paths(self, prefix: str) -> set[str]: ...
    async def own_output(self, key: str) -> OwnOutput | None: ...
    async def counts(self) -> dict[str, dict[str, int]]: ...
    async def active_batches(self) -> list[BatchRow]: ...  # every unfinished provider job, whoever holds it

    # events and the outbox
    async def emit_for_existing(self, job_id: str) -> None: ...
    async def add_event(
        self, event: JobEvent, *, reply_to: str | None = None, correlation_id: str | None = None
    ) -> None: ...
    async def outbox_batch(self, limit: int = 100) -> list[OutboxRow]: ...
    async def outbox_delete(self, seqs: Sequence[int]) -> None: ...
    async def outbox_depth(self) -> int: ...

    # results nobody fetched
    async def finished_http_jobs(
        self, before: str, *, after: str = "", limit: int = 100, mine: bool = True
    ) -> list[FinishedJob]: ...  # oldest first; ``mine``: accepted by this instance (its disk)
    async def forget_job(self, job_id: str) -> bool: ...  # its rows; False if not finished or events wait
