"""Events written with the change that causes them: the job's history (``job_events``) and
the transactional outbox the relay publishes, in the same transaction as the state."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stenod.adapters.sql.statements import All, Exec, One, Op, Row, dumps, loads
from stenod.adapters.sql.views import ITEMS_SQL, snapshot, view_of
from stenod.events import EventKind, JobEvent, utc_now
from stenod.jobs import ItemState, JobState, JobView, derive_job_state


@dataclass(slots=True)
class Emitter:
    """How a journal records events: whether it keeps an outbox (a daemon without a broker
    keeps only the history), how much transcript an event carries inline, and the jobs
    whose events the running transaction added (handed to watchers after the commit)."""

    outbox: bool = True
    inline_transcript_bytes: int = 256 * 1024
    changed: list[str] = field(default_factory=list)


def emit(em: Emitter, kind: EventKind, row: Row | Mapping[str, Any], view: JobView) -> Op[None]:
    """Record the event in the job's history and the outbox; ``row`` and ``view`` are the job
    as this transaction leaves it."""
    event = JobEvent.new(
        kind, view.job_id, view.provider, view.to_data(inline_transcript_bytes=em.inline_transcript_bytes)
    )
    body = dumps(event.envelope())
    yield Exec(
        "INSERT INTO job_events (event_id, job_id, kind, body, created_at) VALUES (?, ?, ?, ?, ?)",
        (event.id, view.job_id, str(kind), body, event.time),
    )
    em.changed.append(view.job_id)
    if not em.outbox:
        return
    reply_to = row["reply_to"] if kind.terminal else None
    yield from outbox_insert(event, body, reply_to, row["correlation_id"] if reply_to else None)


def outbox_insert(event: JobEvent, body: str, reply_to: str | None, correlation_id: str | None) -> Op[None]:
    yield Exec(
        "INSERT INTO outbox (event_id, job_id, routing_key, body, reply_to, correlation_id, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (event.id, event.job_id, event.routing_key, body, reply_to, correlation_id, event.time),
    )


def _job_cost(item_rows: Sequence[Row]) -> str | None:
    total: dict[str, float] = {}
    for r in item_rows:
        if r["cost"] is None:
            continue
        c = loads(r["cost"])
        total[c.get("currency", "USD")] = total.get(c.get("currency", "USD"), 0.0) + float(c["amount"])
    if not total:
        return None
    if len(total) == 1:
        currency, amount = next(iter(total.items()))
        return dumps({"amount": round(amount, 8), "currency": currency})
    return dumps({"amounts": total})


def _job_error(items: Sequence[Row]) -> str | None:
    """A failed job's error: its items' one error, or a summary when they differ."""
    errors = [loads(r["error"]) for r in items if r["error"] is not None]
    if len(errors) == 1 or (errors and all(e["code"] == errors[0]["code"] for e in errors)):
        return dumps(errors[0])
    if errors:
        return dumps({"code": "items_failed", "message": f"all {len(errors)} items failed", "retryable": False})
    return None


def refresh_job(em: Emitter, job_id: str) -> Op[JobState]:
    """Recompute the job's state from its items; on a change, store it and emit its event."""
    job = yield One("SELECT * FROM jobs WHERE id = ?", (job_id,))
    items = yield All(ITEMS_SQL, (job_id,))
    old = JobState(job["state"])
    new = derive_job_state([ItemState(r["state"]) for r in items], cancel_requested=bool(job["cancel_requested"]))
    if new == old:
        return new
    if old.terminal:
        return old  # a terminal job never moves again
    progress = 1.0 if new.terminal else None
    error = _job_error(items) if new == JobState.FAILED else None
    cost = _job_cost(items) if new.terminal else None
    yield Exec(
        "UPDATE jobs SET state = ?, updated_at = ?, progress = COALESCE(?, progress), "
        "error = COALESCE(?, error), cost = COALESCE(?, cost) WHERE id = ?",
        (str(new), utc_now(), progress, error, cost, job_id),
    )
    job = yield One("SELECT * FROM jobs WHERE id = ?", (job_id,))
    view = view_of(job, items)
    kind = {JobState.SUBMITTED: EventKind.SUBMITTED, JobState.RUNNING: EventKind.PROGRESS}.get(new) or EventKind(
        str(new)
    )
    if new == JobState.RUNNING and old == JobState.ACCEPTED:
        yield from emit(em, EventKind.SUBMITTED, job, view)
    yield from emit(em, kind, job, view)
    return new


def emit_progress(em: Emitter, job_id: str) -> Op[None]:
    """A (rate-limited by the caller) progress event for a running job."""
    found = yield from snapshot(job_id)
    if found is not None and not found[1].state.terminal:
        yield from emit(em, EventKind.PROGRESS, *found)


def emit_for_existing(em: Emitter, job_id: str) -> Op[None]:
    """Re-publish a job's current state (a repeated request_id gets the existing job's events)."""
    found = yield from snapshot(job_id)
    if found is None:
        return
    row, view = found
    if view.state.terminal:
        kind = EventKind(str(view.state))
    elif view.state == JobState.ACCEPTED:
        kind = EventKind.ACCEPTED
    elif view.state == JobState.SUBMITTED:
        kind = EventKind.SUBMITTED
    else:
        kind = EventKind.PROGRESS
    yield from emit(em, kind, row, view)


def add_event(event: JobEvent, reply_to: str | None, correlation_id: str | None) -> Op[None]:
    """An event about something that is not a job row (e.g. a rejected request)."""
    yield from outbox_insert(event, dumps(event.envelope()), reply_to, correlation_id)
