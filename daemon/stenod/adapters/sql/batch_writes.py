"""Writes of the dispatcher: provider jobs (batches) from creation through polls to the
outcomes of their items, each with the job events it causes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ulid import ULID

from stenod.adapters.sql import own_outputs
from stenod.adapters.sql.emit import Emitter, refresh_jobs
from stenod.adapters.sql.intake_writes import insert_item
from stenod.adapters.sql.statements import All, Count, Exec, Many, One, Op, chunks, dumps, marks
from stenod.adapters.sql.views import ACTIVE_BATCH, ACTIVE_JOB, batch
from stenod.errors import ErrorInfo
from stenod.events import utc_now
from stenod.jobs import BatchState, ItemState, is_forward
from stenod.journal import BatchRow, ItemOutcome

_TERMINAL = tuple(str(s) for s in ItemState if s.terminal)


def create_batch(
    provider: str, item_ids: Sequence[str], next_at: float, holder: str, until: float, max_jobs: int | None
) -> Op[BatchRow | None]:
    """Record the intent to submit these items as one provider job (before any remote call),
    held by ``holder``. Only items still waiting join it: another instance may have packed
    some of them since they were read. None: it packed them all, or the provider already
    has ``max_jobs`` unfinished jobs (counted over every instance)."""
    if max_jobs is not None:
        # The provider's row is locked until this transaction ends (on PostgreSQL; SQLite has
        # one writer anyway), so two instances cannot both see the last free slot.
        yield Exec("INSERT INTO provider_slots (provider) VALUES (?) ON CONFLICT (provider) DO NOTHING", (provider,))
        yield Exec("UPDATE provider_slots SET created = created + 1 WHERE provider = ?", (provider,))
        row = yield One(f"SELECT COUNT(*) AS n FROM batches WHERE provider = ? AND {ACTIVE_BATCH}", (provider,))
        if row["n"] >= max_jobs:
            return None
    batch_id = str(ULID())
    now = utc_now()
    yield Exec(
        "INSERT INTO batches (id, provider, state, next_at, created_at, updated_at, holder, lease_until, lease_gen) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)",
        (batch_id, provider, str(BatchState.SUBMITTING), next_at, now, now, holder, until),
    )
    taken = 0
    for chunk in chunks(item_ids):
        taken += yield Count(
            f"UPDATE items SET batch_id = ?, updated_at = ? WHERE id IN ({marks(chunk)}) "
            "AND state = 'pending' AND batch_id IS NULL",
            (batch_id, now, *chunk),
        )
    if not taken:
        yield Exec("DELETE FROM batches WHERE id = ?", (batch_id,))
        return None
    created = yield from batch(batch_id)
    assert created is not None
    return created


def save_checkpoint(batch_id: str, data: Mapping[str, Any]) -> Op[None]:
    yield Exec(
        "UPDATE batches SET checkpoint = ?, updated_at = ? WHERE id = ?", (dumps(dict(data)), utc_now(), batch_id)
    )


def move_items(em: Emitter, batch_id: str, state: ItemState) -> Op[None]:
    """Move the provider job's items forward to ``state``; an item already there, past it
    or finished stays as it is (a poll repeated after a restart changes nothing)."""
    before = [str(s) for s in ItemState if not s.terminal and s != state and is_forward(s, state)]
    rows = yield All(
        f"UPDATE items SET state = ?, updated_at = ? WHERE batch_id = ? AND state IN ({marks(before)}) "
        "RETURNING job_id",
        (str(state), utc_now(), batch_id, *before),
    )
    yield from refresh_jobs(em, (r["job_id"] for r in rows))


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
            count = yield Count(
                f"UPDATE jobs SET progress = ? WHERE id = ? AND progress < ? AND {ACTIVE_JOB}",
                (progress, r["job_id"], progress),
            )
            if count:
                changed.append(r["job_id"])
    return changed


def set_progress(job_ids: Iterable[str], progress: float) -> Op[None]:
    yield Many("UPDATE jobs SET progress = ? WHERE id = ? AND progress < ?", [(progress, j, progress) for j in job_ids])


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
    # Only an item not yet finished takes its outcome (a terminal one never changes). The
    # UPDATE itself decides, so of two instances finishing the same item only one adds events.
    open_: dict[str, str] = {}
    for o in outcomes:
        row = yield One(
            "UPDATE items SET state = ?, outputs = ?, error = ?, result = COALESCE(?, result), cost = ?, "
            f"updated_at = ? WHERE id = ? AND state NOT IN ({marks(_TERMINAL)}) RETURNING job_id",
            (
                str(o.state),
                dumps([f.path for f in o.outputs]),
                dumps(o.error.to_json()) if o.error else None,
                dumps(dict(o.result)) if o.result is not None else None,
                dumps(dict(o.cost)) if o.cost else None,
                now,
                o.item_id,
                *_TERMINAL,
            ),
        )
        if row is not None:
            open_[o.item_id] = row["job_id"]
        # Also for an outcome another instance's came before: the files are on disk all the same.
        yield from own_outputs.settle(o.item_id, o.outputs)
    taken = [o for o in outcomes if o.item_id in open_]
    for o in taken:
        if o.follow_up is not None and o.state == ItemState.SUCCEEDED:
            job_id = open_[o.item_id]
            last = yield One("SELECT MAX(idx) AS idx FROM items WHERE job_id = ?", (job_id,))
            yield from insert_item(job_id, last["idx"] + 1, o.follow_up, now)
    jobs = {open_[o.item_id] for o in taken}
    if batch_id is not None and state is not None:
        yield Exec(
            "UPDATE batches SET state = ?, error = ?, updated_at = ? WHERE id = ?",
            (str(state), dumps(error.to_json()) if error else None, now, batch_id),
        )
    yield from refresh_jobs(em, jobs)


def attach_download(item_id: str, path: str, size: int, device: int, inode: int) -> Op[None]:
    """A URL input was downloaded: the item now has a local file and can be packed."""
    yield Exec(
        "UPDATE items SET path = ?, size = ?, device = ?, inode = ?, updated_at = ? WHERE id = ?",
        (path, size, device, inode, utc_now(), item_id),
    )


def release_items(batch_id: str, item_ids: Sequence[str]) -> Op[None]:
    """Return items to the queue (their provider job ended without them)."""
    now = utc_now()
    yield Many(
        "UPDATE items SET batch_id = NULL, state = 'pending', updated_at = ? WHERE id = ? AND batch_id = ?",
        [(now, item_id, batch_id) for item_id in item_ids],
    )


def outbox_delete(seqs: Sequence[int]) -> Op[None]:
    for chunk in chunks(seqs):
        yield Exec(f"DELETE FROM outbox WHERE seq IN ({marks(chunk)})", chunk)
