"""Writes of the dispatcher: provider jobs (batches) from creation through polls to the
outcomes of their items, each with the job events it causes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ulid import ULID

from stenod.adapters.sql.emit import Emitter, refresh_job
from stenod.adapters.sql.intake_writes import insert_item
from stenod.adapters.sql.statements import All, Exec, One, Op, dumps
from stenod.adapters.sql.views import ACTIVE_JOB, batch
from stenod.errors import ErrorInfo
from stenod.events import utc_now
from stenod.jobs import BatchState, ItemState, check_item_transition
from stenod.journal import BatchRow, ItemOutcome


def create_batch(provider: str, item_ids: Sequence[str], next_at: float) -> Op[BatchRow]:
    """Record the intent to submit these items as one provider job (before any remote call)."""
    batch_id = str(ULID())
    now = utc_now()
    yield Exec(
        "INSERT INTO batches (id, provider, state, next_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
        (batch_id, provider, str(BatchState.SUBMITTING), next_at, now, now),
    )
    for item_id in item_ids:
        yield Exec(
            "UPDATE items SET batch_id = ?, updated_at = ? WHERE id = ? AND state = 'pending' AND batch_id IS NULL",
            (batch_id, now, item_id),
        )
    created = yield from batch(batch_id)
    assert created is not None
    return created


def save_checkpoint(batch_id: str, data: Mapping[str, Any]) -> Op[None]:
    yield Exec(
        "UPDATE batches SET checkpoint = ?, updated_at = ? WHERE id = ?", (dumps(dict(data)), utc_now(), batch_id)
    )


def move_items(em: Emitter, batch_id: str, state: ItemState) -> Op[None]:
    now = utc_now()
    jobs: set[str] = set()
    rows = yield All("SELECT id, job_id, state FROM items WHERE batch_id = ? ORDER BY id", (batch_id,))
    for r in rows:
        current = ItemState(r["state"])
        if current.terminal or current == state:
            continue
        check_item_transition(current, state)
        yield Exec("UPDATE items SET state = ?, updated_at = ? WHERE id = ?", (str(state), now, r["id"]))
        jobs.add(r["job_id"])
    for job_id in sorted(jobs):
        yield from refresh_job(em, job_id)


def batch_submitted(em: Emitter, batch_id: str, handle: Mapping[str, Any], next_at: float) -> Op[None]:
    yield Exec(
        "UPDATE batches SET state = ?, handle = ?, attempts = 0, next_at = ?, error = NULL, updated_at = ? "
        "WHERE id = ?",
        (str(BatchState.POLLING), dumps(dict(handle)), next_at, utc_now(), batch_id),
    )
    yield from move_items(em, batch_id, ItemState.SUBMITTED)


def batch_polled(
    em: Emitter, batch_id: str, running: bool, progress: float | None, next_at: float, poll_time: float
) -> Op[list[str]]:
    """Record a poll; returns the ids of jobs whose progress changed."""
    yield Exec(
        "UPDATE batches SET attempts = 0, next_at = ?, last_poll_at = ?, error = NULL, updated_at = ? WHERE id = ?",
        (next_at, poll_time, utc_now(), batch_id),
    )
    if running:
        yield from move_items(em, batch_id, ItemState.RUNNING)
    changed: list[str] = []
    if progress is not None:
        rows = yield All("SELECT DISTINCT job_id FROM items WHERE batch_id = ? ORDER BY job_id", (batch_id,))
        for r in rows:
            count = yield Exec(
                f"UPDATE jobs SET progress = ? WHERE id = ? AND progress < ? AND {ACTIVE_JOB}",
                (progress, r["job_id"], progress),
            )
            if count:
                changed.append(r["job_id"])
    return changed


def set_progress(job_ids: Iterable[str], progress: float) -> Op[None]:
    for job_id in job_ids:
        yield Exec("UPDATE jobs SET progress = ? WHERE id = ? AND progress < ?", (progress, job_id, progress))


def batch_state(batch_id: str, state: BatchState, next_at: float | None) -> Op[None]:
    yield Exec(
        "UPDATE batches SET state = ?, next_at = COALESCE(?, next_at), updated_at = ? WHERE id = ?",
        (str(state), next_at, utc_now(), batch_id),
    )


def batch_retry(batch_id: str, attempts: int, next_at: float, error: ErrorInfo) -> Op[None]:
    yield Exec(
        "UPDATE batches SET attempts = ?, next_at = ?, error = ?, updated_at = ? WHERE id = ?",
        (attempts, next_at, dumps(error.to_json()), utc_now(), batch_id),
    )


def finish_items(
    em: Emitter,
    outcomes: Sequence[ItemOutcome],
    batch_id: str | None,
    state: BatchState | None,
    error: ErrorInfo | None,
) -> Op[None]:
    """Commit item outcomes (and optionally close their provider job) with the events they cause."""
    now = utc_now()
    jobs: set[str] = set()
    for o in outcomes:
        row = yield One("SELECT job_id, state FROM items WHERE id = ?", (o.item_id,))
        if row is None or ItemState(row["state"]).terminal:
            continue
        check_item_transition(ItemState(row["state"]), o.state)
        yield Exec(
            "UPDATE items SET state = ?, outputs = ?, error = ?, result = COALESCE(?, result), "
            "cost = ?, updated_at = ? WHERE id = ?",
            (
                str(o.state),
                dumps(list(o.outputs)),
                dumps(o.error.to_json()) if o.error else None,
                dumps(dict(o.result)) if o.result is not None else None,
                dumps(dict(o.cost)) if o.cost else None,
                now,
                o.item_id,
            ),
        )
        jobs.add(row["job_id"])
        if o.follow_up is not None and o.state == ItemState.SUCCEEDED:
            last = yield One("SELECT MAX(idx) AS idx FROM items WHERE job_id = ?", (row["job_id"],))
            yield from insert_item(row["job_id"], last["idx"] + 1, o.follow_up, now)
    if batch_id is not None and state is not None:
        yield Exec(
            "UPDATE batches SET state = ?, error = ?, updated_at = ? WHERE id = ?",
            (str(state), dumps(error.to_json()) if error else None, now, batch_id),
        )
    for job_id in sorted(jobs):
        yield from refresh_job(em, job_id)


def attach_download(item_id: str, path: str, size: int, device: int, inode: int) -> Op[None]:
    """A URL input was downloaded: the item now has a local file and can be packed."""
    yield Exec(
        "UPDATE items SET path = ?, size = ?, device = ?, inode = ?, updated_at = ? WHERE id = ?",
        (path, size, device, inode, utc_now(), item_id),
    )


def release_items(batch_id: str, item_ids: Sequence[str]) -> Op[None]:
    """Return items to the queue (their provider job ended without them)."""
    for item_id in item_ids:
        yield Exec(
            "UPDATE items SET batch_id = NULL, state = 'pending', updated_at = ? WHERE id = ? AND batch_id = ?",
            (utc_now(), item_id, batch_id),
        )


def outbox_delete(seqs: Sequence[int]) -> Op[None]:
    for start in range(0, len(seqs), 500):  # one statement per 500 rows: few round trips, few parameters
        chunk = tuple(seqs[start : start + 500])
        yield Exec(f"DELETE FROM outbox WHERE seq IN ({','.join('?' * len(chunk))})", chunk)
