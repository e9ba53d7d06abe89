"""Events written with the change that causes them: the job's history (``job_events``) and
the transactional outbox the relay publishes, in the same transaction as the state.

An operation's events are collected as it runs and written at its end, all of them in
one statement per table (in the order they were made): a provider job of fifty jobs
finishes in a handful of statements, not fifty times five, which is what a database at
the other end of a network connection needs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stenod.adapters.sql.statements import FOR_UPDATE, All, Exec, Many, Op, Row, chunks, dumps, loads, marks
from stenod.adapters.sql.views import items_of, snapshot, view_of
from stenod.events import EventKind, JobEvent, utc_now
from stenod.jobs import ItemState, JobState, JobView, derive_job_state

_EVENT_COLUMNS = "(event_id, job_id, kind, body, created_at)"
_OUTBOX_COLUMNS = "(event_id, job_id, routing_key, body, reply_to, correlation_id, created_at)"


@dataclass(slots=True)
class Emitter:
    """How a journal records events (whether it keeps an outbox: a daemon without a broker
    keeps only the history; how much transcript an event carries inline), the events of
    the running operation, and the jobs they are about (told to watchers after the commit)."""

    outbox: bool = True
    inline_transcript_bytes: int = 256 * 1024
    notify: str | None = None  # run once when outbox rows were written (PostgreSQL: wake the relays)
    changed: list[str] = field(default_factory=list)
    entered: list[tuple[str, str]] = field(default_factory=list)  # (provider, state) of each job's new state
    history: list[tuple[Any, ...]] = field(default_factory=list)
    to_publish: list[tuple[Any, ...]] = field(default_factory=list)


def emit(em: Emitter, kind: EventKind, row: Row | Mapping[str, Any], view: JobView) -> None:
    """An event for the job's history and the outbox; ``row`` and ``view`` are the job as
    this transaction leaves it."""
    event = JobEvent.new(
        kind, view.job_id, view.provider, view.to_data(inline_transcript_bytes=em.inline_transcript_bytes)
    )
    body = dumps(event.envelope())
    em.history.append((event.id, view.job_id, str(kind), body, event.time))
    em.changed.append(view.job_id)
    if kind != EventKind.PROGRESS:
        em.entered.append((view.provider, str(kind)))
    if em.outbox:
        reply_to = row["reply_to"] if kind.terminal else None
        publish(em, event, body, reply_to, row["correlation_id"] if reply_to else None)


def publish(em: Emitter, event: JobEvent, body: str, reply_to: str | None, correlation_id: str | None) -> None:
    em.to_publish.append((event.id, event.job_id, event.routing_key, body, reply_to, correlation_id, event.time))


def flush(em: Emitter) -> Op[None]:
    """Write the operation's events (the end of every operation that makes some)."""
    for table, columns, rows in (
        ("job_events", _EVENT_COLUMNS, em.history),
        ("outbox", _OUTBOX_COLUMNS, em.to_publish),
    ):
        for chunk in chunks(rows, 400):  # 400 rows of 7: well inside SQLite's 32766 parameters
            values = ", ".join(f"({marks(row)})" for row in chunk)
            yield Exec(f"INSERT INTO {table} {columns} VALUES {values}", [v for row in chunk for v in row])
    if em.to_publish and em.notify is not None:
        yield Exec(em.notify)
    em.history.clear()
    em.to_publish.clear()


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


def refresh_jobs(em: Emitter, job_ids: Iterable[str]) -> Op[None]:
    """Recompute the jobs' states from their items; store each change and emit its events.
    Two reads for all the jobs, and one batch of updates for those that changed."""
    ids = sorted(set(job_ids))
    jobs: dict[str, Row] = {}
    for chunk in chunks(ids):
        # Locked until the commit, and in id order (no deadlock): of two transactions that
        # finish two items of one job, the second waits here and then reads the first's
        # item too, so one of them ends the job. (Without it, each saw the other's item
        # still open under PostgreSQL's READ COMMITTED, and the job never ended.)
        for row in (yield All(f"SELECT * FROM jobs WHERE id IN ({marks(chunk)}) ORDER BY id{FOR_UPDATE}", chunk)):
            jobs[row["id"]] = row
    items = yield from items_of(ids)
    now = utc_now()
    updates = [u for job_id in ids if job_id in jobs and (u := _refreshed(em, jobs[job_id], items[job_id], now))]
    yield Many("UPDATE jobs SET state = ?, updated_at = ?, progress = ?, error = ?, cost = ? WHERE id = ?", updates)


def _refreshed(em: Emitter, job: Row, items: Sequence[Row], now: str) -> tuple[Any, ...] | None:
    """The job's row as its items leave it (None: unchanged), its events emitted."""
    old = JobState(job["state"])
    new = derive_job_state([ItemState(r["state"]) for r in items], cancel_requested=bool(job["cancel_requested"]))
    if new == old or old.terminal:  # a terminal job never moves again
        return None
    row = {key: job[key] for key in job.keys()}  # noqa: SIM118 (sqlite3.Row has no __iter__ over keys)
    row.update(state=str(new), updated_at=now)
    if new.terminal:
        row.update(progress=1.0, cost=_job_cost(items) or row["cost"])
    if new == JobState.FAILED:
        row["error"] = _job_error(items) or row["error"]
    view = view_of(row, items)
    if new == JobState.RUNNING and old == JobState.ACCEPTED:
        emit(em, EventKind.SUBMITTED, row, view)
    kind = {JobState.SUBMITTED: EventKind.SUBMITTED, JobState.RUNNING: EventKind.PROGRESS}.get(new)
    emit(em, kind or EventKind(str(new)), row, view)
    return (row["state"], now, row["progress"], row["error"], row["cost"], row["id"])


def emit_progress(em: Emitter, job_id: str) -> Op[None]:
    """A (rate-limited by the caller) progress event for a running job."""
    found = yield from snapshot(job_id)
    if found is not None and not found[1].state.terminal:
        emit(em, EventKind.PROGRESS, *found)


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
    emit(em, kind, row, view)


def add_event(em: Emitter, event: JobEvent, reply_to: str | None, correlation_id: str | None) -> Op[None]:
    """An event about something that is not a job row (e.g. a rejected request)."""
    publish(em, event, dumps(event.envelope()), reply_to, correlation_id)
    yield from ()
