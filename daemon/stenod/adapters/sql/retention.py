"""Results nobody fetched: finding finished HTTP jobs (and kept voice commands, which have
no files) older than the keep time, and forgetting one (its rows, once its files are
gone), oldest first."""

from __future__ import annotations

from stenod.adapters.sql.statements import FOR_UPDATE, All, Exec, One, Op, loads
from stenod.jobs import JobState
from stenod.journal import FinishedJob
from stenod.output_spec import OutputSpec

__all__ = ["finished_http_jobs", "forget_job"]

_TERMINAL = tuple(str(s) for s in JobState if s.terminal)
_IN_TERMINAL = ", ".join("?" for _ in _TERMINAL)


def finished_http_jobs(cutoff: str, instance: str | None, after: str, limit: int) -> Op[list[FinishedJob]]:
    """Jobs from the HTTP server and the Wyoming listener that ended before ``cutoff``, by
    id after ``after`` (the journal's order); only those ``instance`` accepted, when one is
    named (their files are on its disk)."""
    sql = (
        f"SELECT id, updated_at, output, source FROM jobs WHERE source IN ('http', 'wyoming') "
        f"AND state IN ({_IN_TERMINAL}) AND updated_at < ? AND id > ?"
    )
    args: list[object] = [*_TERMINAL, cutoff, after]
    if instance is not None:
        sql += " AND instance = ?"
        args.append(instance)
    rows = yield All(sql + " ORDER BY id LIMIT ?", (*args, limit))
    return [
        FinishedJob(r["id"], r["updated_at"], OutputSpec.from_json(loads(r["output"])).dir, r["source"]) for r in rows
    ]


def forget_job(job_id: str) -> Op[bool]:
    """Delete a finished job's rows (events, items, corrections, its provider jobs). False,
    and nothing deleted, for a job that is gone, not finished, or has events the broker has
    not confirmed yet (they go first)."""
    row = yield One("SELECT state FROM jobs WHERE id = ?" + FOR_UPDATE, (job_id,))
    if row is None or row["state"] not in _TERMINAL:
        return False
    if (yield One("SELECT 1 AS pending FROM outbox WHERE job_id = ? LIMIT 1", (job_id,))) is not None:
        return False
    batches = [r["batch_id"] for r in (yield All("SELECT DISTINCT batch_id FROM items WHERE job_id = ?", (job_id,)))]
    yield Exec("DELETE FROM item_edits WHERE item_id IN (SELECT id FROM items WHERE job_id = ?)", (job_id,))
    # Its files go with it: their records would name paths that no longer hold stenod's files.
    yield Exec("DELETE FROM own_outputs WHERE item_id IN (SELECT id FROM items WHERE job_id = ?)", (job_id,))
    yield Exec("DELETE FROM job_retries WHERE job_id = ? OR retry_of = ?", (job_id, job_id))
    yield Exec("DELETE FROM job_events WHERE job_id = ?", (job_id,))
    yield Exec("DELETE FROM items WHERE job_id = ?", (job_id,))
    for batch_id in batches:
        if batch_id is not None:  # a provider job shared with another job's items stays
            yield Exec(
                "DELETE FROM batches WHERE id = ? AND NOT EXISTS (SELECT 1 FROM items WHERE batch_id = ?)",
                (batch_id, batch_id),
            )
    yield Exec("DELETE FROM jobs WHERE id = ?", (job_id,))
    return True
