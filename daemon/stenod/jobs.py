"""Jobs, items and their states: the pure state machine, no I/O.

A job is what a source accepted (one request, or one file from a watched folder);
it has one item per input. Items of compatible jobs are packed into provider jobs
("batches"). The public job state is derived from its items' states, so it can
never disagree with them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, NewType
from urllib.parse import urlsplit, urlunsplit

from stenod.errors import ErrorInfo, InvalidTransition
from stenod.who_spoke.views import public_speakers, public_transcript

JobId = NewType("JobId", str)
ItemId = NewType("ItemId", str)
BatchId = NewType("BatchId", str)


def public_input(value: str) -> str:
    """An input as events show it: a URL without its query string or user info (presigned
    URLs carry credentials there); a path as it is."""
    if not value.startswith(("http://", "https://")):
        return value
    parts = urlsplit(value)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit((parts.scheme, host + port, parts.path, "", ""))


class JobState(StrEnum):
    ACCEPTED = "accepted"
    SUBMITTED = "submitted"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL_JOB


_TERMINAL_JOB: Final = frozenset({JobState.SUCCEEDED, JobState.PARTIAL, JobState.FAILED, JobState.CANCELLED})

_NEXT_JOB: Final[Mapping[JobState, frozenset[JobState]]] = {
    JobState.ACCEPTED: frozenset({JobState.SUBMITTED, JobState.RUNNING, *_TERMINAL_JOB}),
    JobState.SUBMITTED: frozenset({JobState.RUNNING, *_TERMINAL_JOB}),
    JobState.RUNNING: frozenset(_TERMINAL_JOB),
    JobState.SUCCEEDED: frozenset(),
    JobState.PARTIAL: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


def check_job_transition(current: JobState, target: JobState) -> None:
    if target != current and target not in _NEXT_JOB[current]:
        raise InvalidTransition(current, target)


class ItemState(StrEnum):
    """An item's life: pending (waiting for a provider job) → submitted (in one) →
    running → fetched (result in the journal, outputs not yet written) → succeeded;
    or failed / cancelled from any non-terminal state."""

    PENDING = "pending"
    SUBMITTED = "submitted"
    RUNNING = "running"
    FETCHED = "fetched"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (ItemState.SUCCEEDED, ItemState.FAILED, ItemState.CANCELLED)


_ITEM_ORDER: Final = {
    ItemState.PENDING: 0,
    ItemState.SUBMITTED: 1,
    ItemState.RUNNING: 2,
    ItemState.FETCHED: 3,
}


def is_forward(current: ItemState, target: ItemState) -> bool:
    """Is ``target`` later in an unfinished item's life than ``current``?"""
    return not current.terminal and not target.terminal and _ITEM_ORDER[target] > _ITEM_ORDER[current]


def derive_job_state(item_states: Iterable[ItemState], *, cancel_requested: bool = False) -> JobState:
    """The public job state implied by its items' states."""
    states = list(item_states)
    if not states:
        return JobState.FAILED
    if all(s.terminal for s in states):
        ok = sum(s == ItemState.SUCCEEDED for s in states)
        if ok == len(states):
            return JobState.SUCCEEDED
        if ok:
            return JobState.PARTIAL
        if cancel_requested or all(s == ItemState.CANCELLED for s in states):
            return JobState.CANCELLED
        return JobState.FAILED
    if any(s in (ItemState.RUNNING, ItemState.FETCHED) or s.terminal for s in states):
        return JobState.RUNNING
    if any(s == ItemState.SUBMITTED for s in states):
        return JobState.SUBMITTED
    return JobState.ACCEPTED


class BatchState(StrEnum):
    """A provider job's internal life in the journal (not public)."""

    SUBMITTING = "submitting"  # packed; submit() not finished (checkpoint may exist)
    POLLING = "polling"  # submitted; waiting for the provider to finish
    FETCHING = "fetching"  # provider finished; results not yet in the journal
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class ItemView:
    """An item as events and the CLI show it."""

    item_id: ItemId
    index: int
    input: str
    state: ItemState
    outputs: tuple[str, ...] = ()
    error: ErrorInfo | None = None
    transcript: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class JobView:
    """A job snapshot: the ``data`` of every event and what ``stenod job`` prints."""

    job_id: JobId
    request_id: str | None
    task: str
    provider: str
    state: JobState
    progress: float
    items: tuple[ItemView, ...]
    error: ErrorInfo | None
    cost: Mapping[str, Any] | None
    created_at: str
    updated_at: str
    source: str = "folder"
    language: str | None = None
    target_languages: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_data(self, *, inline_transcript_bytes: int = 1_000_000) -> dict[str, Any]:
        """The event ``data`` / ``stenod job --json`` shape from design.md."""
        budget = inline_transcript_bytes
        items = []
        for item in self.items:
            entry: dict[str, Any] = {
                "input": public_input(item.input),
                "state": str(item.state),
                "outputs": list(item.outputs),
                "error": item.error.to_json() if item.error else None,
            }
            if speakers := public_speakers(item.transcript):
                entry["speakers"] = speakers  # also when the transcript is too long to come inline
            if item.transcript is not None and self.state.terminal:
                size = len(str(item.transcript.get("text", ""))) + 200 * len(item.transcript.get("segments") or ())
                if size <= budget:
                    budget -= size
                    entry["transcript"] = public_transcript(item.transcript)
            items.append(entry)
        return {
            "job_id": self.job_id,
            "request_id": self.request_id,
            "task": self.task,
            "provider": self.provider,
            "state": str(self.state),
            "progress": round(self.progress, 4),
            "items": items,
            "error": self.error.to_json() if self.error else None,
            "cost": dict(self.cost) if self.cost else None,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }
