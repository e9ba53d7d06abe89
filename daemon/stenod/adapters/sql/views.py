"""Reading the journal: rows turned into the core's views, and the read-only operations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stenod.adapters.sql.statements import All, One, Op, Row, chunks, diarization_of_text, loads, marks
from stenod.corrections import EditableItem
from stenod.errors import ErrorInfo
from stenod.jobs import BatchState, ItemState, ItemView, JobId, JobState, JobView
from stenod.journal import BatchRow, NewItem, NewJob, OpenItem, OutboxRow
from stenod.output_spec import OutputSpec

# Items of several jobs at once ({marks}: the job ids' placeholders), grouped by job.
ITEMS_IN_SQL = (
    "SELECT items.*, item_edits.transcript AS edited FROM items LEFT JOIN item_edits "
    "ON item_edits.item_id = items.id WHERE items.job_id IN ({marks}) ORDER BY items.job_id, items.idx"
)

OPEN_ITEM_SQL = """
SELECT i.*, COALESCE(i.task, j.task) AS eff_task, COALESCE(i.provider, j.provider) AS eff_provider,
       j.language, COALESCE(i.target_languages, j.target_languages) AS eff_targets,
       COALESCE(i.options, j.options) AS eff_options, j.output,
       j.created_at AS job_created_at, j.cancel_requested, j.instance AS origin, j.diarization
FROM items i JOIN jobs j ON j.id = i.job_id
"""

ACTIVE_JOB = "state NOT IN ('succeeded', 'partial', 'failed', 'cancelled')"
ACTIVE_BATCH = "state NOT IN ('done', 'failed')"  # a provider job not yet finished


def transcript_of(row: Row) -> Any:
    """A person's correction when there is one, else the engine's transcript."""
    if "edited" in row.keys() and row["edited"]:  # noqa: SIM118 (sqlite3.Row has no __contains__)
        return loads(row["edited"])
    return (loads(row["result"]) or {}).get("transcript") if row["result"] else None


def view_of(row: Row, item_rows: Sequence[Row]) -> JobView:
    items = tuple(
        ItemView(
            item_id=r["id"],
            index=r["idx"],
            input=r["input"],
            state=ItemState(r["state"]),
            outputs=tuple(loads(r["outputs"]) or ()),
            error=ErrorInfo.from_json(loads(r["error"])) if r["error"] else None,
            transcript=transcript_of(r),
        )
        for r in item_rows
    )
    return JobView(
        job_id=JobId(row["id"]),
        request_id=row["request_id"],
        task=row["task"],
        provider=row["provider"],
        state=JobState(row["state"]),
        progress=row["progress"],
        items=items,
        error=ErrorInfo.from_json(loads(row["error"])) if row["error"] else None,
        cost=loads(row["cost"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        source=row["source"],
        language=row["language"],
        target_languages=tuple(loads(row["target_languages"])),
    )


def open_item(r: Row) -> OpenItem:
    return OpenItem(
        item_id=r["id"],
        job_id=r["job_id"],
        state=ItemState(r["state"]),
        task=r["eff_task"],
        provider=r["eff_provider"],
        language=r["language"],
        target_languages=tuple(loads(r["eff_targets"])),
        options=loads(r["eff_options"]),
        output=OutputSpec.from_json(loads(r["output"])),
        input=r["input"],
        name=r["name"],
        path=r["path"],
        size=r["size"],
        device=r["device"],
        inode=r["inode"],
        result=loads(r["result"]),
        created_at=r["job_created_at"],
        cancel_requested=bool(r["cancel_requested"]),
        origin=r["origin"],
        diarization=diarization_of_text(r["diarization"]),
    )


def outbox_row(r: Row) -> OutboxRow:
    return OutboxRow(
        r["seq"], r["event_id"], r["job_id"], r["routing_key"], r["body"], r["reply_to"], r["correlation_id"]
    )


def snapshot(job_id: str) -> Op[tuple[Row, JobView] | None]:
    """The job's row and its public view, from one read of the job and one of its items."""
    row = yield One("SELECT * FROM jobs WHERE id = ?", (job_id,))
    if row is None:
        return None
    items = yield from items_of([job_id])
    return row, view_of(row, items[job_id])


def job_view(job_id: str) -> Op[JobView | None]:
    found = yield from snapshot(job_id)
    return found[1] if found is not None else None


def job_by_request(request_id: str) -> Op[JobView | None]:
    row = yield One("SELECT id FROM jobs WHERE request_id = ?", (request_id,))
    if row is None:
        return None
    return (yield from job_view(row["id"]))


def list_jobs(
    state: str | None, limit: int, provider: str | None = None, before: str | None = None
) -> Op[list[JobView]]:
    """Newest first; ``before`` (a job id) pages back through older jobs."""
    where, args = [], []
    for column, value in (("state = ?", state), ("provider = ?", provider), ("id < ?", before)):
        if value:
            where.append(column)
            args.append(value)
    sql = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC LIMIT ?"
    jobs = yield All(sql, (*args, limit))
    items = yield from items_of([j["id"] for j in jobs])
    return [view_of(job, items[job["id"]]) for job in jobs]


def items_of(job_ids: Sequence[str]) -> Op[dict[str, list[Row]]]:
    """The items of these jobs (with their corrections), in order, by job: one read per 500 jobs."""
    items: dict[str, list[Row]] = {job_id: [] for job_id in job_ids}
    for chunk in chunks(job_ids):
        for row in (yield All(ITEMS_IN_SQL.format(marks=marks(chunk)), chunk)):
            items[row["job_id"]].append(row)
    return items


def _batch_row(row: Row, items: Sequence[Row]) -> BatchRow:
    return BatchRow(
        batch_id=row["id"],
        provider=row["provider"],
        state=BatchState(row["state"]),
        handle=loads(row["handle"]),
        checkpoint=loads(row["checkpoint"]),
        attempts=row["attempts"],
        next_at=row["next_at"],
        last_poll_at=row["last_poll_at"],
        items=tuple(open_item(r) for r in items),
        holder=row["holder"],
        lease_until=row["lease_until"],
        lease_gen=row["lease_gen"],
    )


def batch(batch_id: str) -> Op[BatchRow | None]:
    found = yield from batches_where("id = ?", (batch_id,))
    return found[0] if found else None


def leases(job_ids: Sequence[str]) -> Op[dict[str, list[tuple[str, float]]]]:
    """For each of these jobs, the instances stepping its unfinished provider jobs, with the
    time (epoch seconds) their leases run to (``stenod jobs``)."""
    found: dict[str, list[tuple[str, float]]] = {}
    for chunk in chunks(job_ids):
        rows = yield All(
            "SELECT DISTINCT i.job_id, b.holder, b.lease_until FROM items i JOIN batches b ON b.id = i.batch_id "
            f"WHERE i.job_id IN ({marks(chunk)}) AND b.{ACTIVE_BATCH} AND b.holder IS NOT NULL "
            "ORDER BY i.job_id, b.holder",
            chunk,
        )
        for r in rows:
            found.setdefault(r["job_id"], []).append((r["holder"], float(r["lease_until"] or 0.0)))
    return found


def active_batches() -> Op[list[BatchRow]]:
    return (yield from batches_where(ACTIVE_BATCH, ()))


def batches_where(where: str, args: Sequence[Any]) -> Op[list[BatchRow]]:
    """Provider jobs with their items: one read for the jobs, one per 500 of them for the items."""
    rows = yield All(f"SELECT * FROM batches WHERE {where} ORDER BY id", args)
    items: dict[str, list[Row]] = {r["id"]: [] for r in rows}
    for chunk in chunks(list(items)):
        for item in (yield All(OPEN_ITEM_SQL + f" WHERE i.batch_id IN ({marks(chunk)}) ORDER BY i.id", chunk)):
            items[item["batch_id"]].append(item)
    return [_batch_row(r, items[r["id"]]) for r in rows]


def open_items(skip_providers: Sequence[str], limit: int) -> Op[list[OpenItem]]:
    """Items waiting to be packed (pending, no provider job) or with a result to write,
    oldest first. Pending items of ``skip_providers`` (at capacity) are left out, unless
    their job is to be cancelled."""
    pending = "i.state = 'pending' AND i.batch_id IS NULL"
    if skip_providers:
        skip = ",".join("?" * len(skip_providers))
        pending += f" AND (COALESCE(i.provider, j.provider) NOT IN ({skip}) OR j.cancel_requested = 1)"
    rows = yield All(
        OPEN_ITEM_SQL + f" WHERE ({pending}) OR (i.state = 'fetched' AND i.batch_id IS NULL) ORDER BY i.id LIMIT ?",
        (*skip_providers, limit),
    )
    return [open_item(r) for r in rows]


def cancel_requested_jobs() -> Op[list[str]]:
    rows = yield All(f"SELECT id FROM jobs WHERE cancel_requested = 1 AND {ACTIVE_JOB} ORDER BY id")
    return [r["id"] for r in rows]


def retry_links(job_id: str) -> Op[tuple[str | None, list[str]]]:
    """The job this one retried, and the jobs that retried this one."""
    row = yield One("SELECT retry_of FROM job_retries WHERE job_id = ?", (job_id,))
    later = yield All("SELECT job_id FROM job_retries WHERE retry_of = ? ORDER BY job_id", (job_id,))
    return (row["retry_of"] if row else None), [r["job_id"] for r in later]


def repeat_of(job_id: str) -> Op[NewJob | None]:
    """A new job with the same request as ``job_id`` (its inputs as they were recorded)."""
    job = yield One("SELECT * FROM jobs WHERE id = ?", (job_id,))
    if job is None:
        return None
    # A chained step's items (with their own task) are made again by the new job.
    items = yield All("SELECT * FROM items WHERE job_id = ? AND task IS NULL ORDER BY idx", (job_id,))
    return NewJob(
        source=job["source"],
        task=job["task"],
        provider=job["provider"],
        items=[NewItem(input=r["input"], name=r["name"], path=r["path"]) for r in items],
        language=job["language"],
        target_languages=tuple(loads(job["target_languages"])),
        options=loads(job["options"]),
        output=OutputSpec.from_json(loads(job["output"])),
        retry_of=job_id,
        diarization=diarization_of_text(job["diarization"]),
    )


def editable_item(job_id: str, index: int) -> Op[EditableItem | None]:
    """An item's transcripts (the engine's and the correction) and its files."""
    row = yield One(
        "SELECT items.*, item_edits.transcript AS edited FROM items LEFT JOIN item_edits "
        "ON item_edits.item_id = items.id WHERE items.job_id = ? AND items.idx = ?",
        (job_id, index),
    )
    if row is None:
        return None
    original = (loads(row["result"]) or {}).get("transcript") if row["result"] else None
    return EditableItem(
        item_id=row["id"],
        input=row["input"],
        name=row["name"],
        path=row["path"],
        outputs=tuple(loads(row["outputs"]) or ()),
        original=original,
        edited=loads(row["edited"]) if row["edited"] else None,
    )


def events(job_id: str, after: int, limit: int) -> Op[list[tuple[int, str]]]:
    """The job's events after sequence number ``after``, oldest first: (seq, CloudEvent JSON)."""
    rows = yield All(
        "SELECT seq, body FROM job_events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?", (job_id, after, limit)
    )
    return [(int(r["seq"]), r["body"]) for r in rows]


def event_seq(job_id: str, event_id: str) -> Op[int | None]:
    row = yield One("SELECT seq FROM job_events WHERE job_id = ? AND event_id = ?", (job_id, event_id))
    return int(row["seq"]) if row else None


def live_paths(prefix: str) -> Op[set[str]]:
    """Input paths under ``prefix`` of items not yet finished (spool files still needed)."""
    rows = yield All(
        "SELECT path FROM items WHERE substr(path, 1, ?) = ? AND state NOT IN ('succeeded', 'failed', 'cancelled')",
        (len(prefix), prefix),
    )
    return {r["path"] for r in rows}


def counts() -> Op[dict[str, dict[str, int]]]:
    """Jobs by provider and state (metrics, STATUS lines)."""
    rows = yield All("SELECT provider, state, COUNT(*) AS n FROM jobs GROUP BY provider, state")
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        out.setdefault(r["provider"], {})[r["state"]] = int(r["n"])
    return out


def outbox(after: int, limit: int) -> Op[list[OutboxRow]]:
    """Outbox rows with ``seq`` above ``after``, oldest first (what the relay publishes)."""
    rows = yield All("SELECT * FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit))
    return [outbox_row(r) for r in rows]


def outbox_depth() -> Op[int]:
    row = yield One("SELECT COUNT(*) AS n FROM outbox")
    return int(row["n"])


def reusable_result(
    content_hash: str, provider: str, task: str, language: str | None, targets: str, options: str, asked: str | None
) -> Op[Any]:
    """The result of an earlier succeeded item with the same content and the same request."""
    row = yield One(
        "SELECT i.result FROM items i JOIN jobs j ON j.id = i.job_id WHERE i.content_hash = ? "
        "AND i.state = 'succeeded' AND i.result IS NOT NULL AND j.provider = ? AND j.task = ? "
        "AND j.language IS NOT DISTINCT FROM ? AND j.target_languages = ? AND j.options = ? "
        "AND j.diarization IS NOT DISTINCT FROM ? ORDER BY i.id DESC LIMIT 1",
        (content_hash, provider, task, language, targets, options, asked),
    )
    return loads(row["result"]) if row else None


def seen(rule: str, path: str) -> Op[tuple[int, int, int] | None]:
    """The file a rule last took at ``path``: (inode, size, mtime_ns). Not the device, as in
    the claim of ``create_job``: two machines number one network mount differently."""
    row = yield One("SELECT inode, size, mtime_ns FROM seen_files WHERE rule = ? AND path = ?", (rule, path))
    return (row["inode"], row["size"], row["mtime_ns"]) if row else None
