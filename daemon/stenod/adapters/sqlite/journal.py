"""The job journal on SQLite: jobs, items, provider jobs (batches) with their handles
and step checkpoints, seen files, and the transactional outbox of events.

Every state change and the event it produces are committed in one transaction.
Public job states are derived from item states (``stenod.jobs.derive_job_state``).
"""

from __future__ import annotations

import asyncio
import collections
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ulid import ULID

from stenod import jsontext
from stenod.adapters.sqlite.schema import migrate
from stenod.adapters.sqlite.store import WriterThread, connect
from stenod.corrections import EditableItem
from stenod.errors import ErrorInfo
from stenod.events import EventKind, JobEvent, utc_now
from stenod.jobs import (
    BatchState,
    ItemId,
    ItemState,
    ItemView,
    JobId,
    JobState,
    JobView,
    check_item_transition,
    derive_job_state,
)
from stenod.journal import BatchRow, ItemOutcome, NewItem, NewJob, OpenItem, OutboxRow

T = TypeVar("T")


_dumps = jsontext.dumps


def _loads(text: str | None) -> Any:
    return None if text is None else jsontext.loads(text)


# -- pure SQL functions (shared by the async journal and the CLI's reader) -----


_ITEMS_SQL = (
    "SELECT items.*, item_edits.transcript AS edited FROM items "
    "LEFT JOIN item_edits ON item_edits.item_id = items.id WHERE items.job_id = ? ORDER BY items.idx"
)


def _job_view(conn: sqlite3.Connection, job_id: str) -> JobView | None:
    snapshot = _snapshot(conn, job_id)
    return snapshot[1] if snapshot is not None else None


def _snapshot(conn: sqlite3.Connection, job_id: str) -> tuple[sqlite3.Row, JobView] | None:
    """The job's row and its public view, from one read of the job and one of its items."""
    row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        return None
    return row, _view_of(row, conn.execute(_ITEMS_SQL, (job_id,)).fetchall())


def _transcript_of(row: sqlite3.Row) -> Any:
    """A person's correction when there is one, else the engine's transcript."""
    if "edited" in row.keys() and row["edited"]:  # noqa: SIM118 (sqlite3.Row has no __contains__)
        return _loads(row["edited"])
    return (_loads(row["result"]) or {}).get("transcript") if row["result"] else None


def _view_of(row: sqlite3.Row, item_rows: Sequence[sqlite3.Row]) -> JobView:
    items = tuple(
        ItemView(
            item_id=r["id"],
            index=r["idx"],
            input=r["input"],
            state=ItemState(r["state"]),
            outputs=tuple(_loads(r["outputs"]) or ()),
            error=ErrorInfo.from_json(_loads(r["error"])) if r["error"] else None,
            transcript=_transcript_of(r),
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
        error=ErrorInfo.from_json(_loads(row["error"])) if row["error"] else None,
        cost=_loads(row["cost"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        source=row["source"],
        language=row["language"],
        target_languages=tuple(_loads(row["target_languages"])),
    )


def _list_jobs(
    conn: sqlite3.Connection,
    state: str | None,
    limit: int,
    provider: str | None = None,
    before: str | None = None,
) -> list[JobView]:
    where, args = [], []
    for column, value in (("state = ?", state), ("provider = ?", provider), ("id < ?", before)):
        if value:
            where.append(column)
            args.append(value)
    sql = "SELECT id FROM jobs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC LIMIT ?"
    rows = conn.execute(sql, (*args, limit))
    return [v for r in rows.fetchall() if (v := _job_view(conn, r["id"])) is not None]


def _insert_item(conn: sqlite3.Connection, job_id: str, idx: int, item: NewItem, now: str) -> ItemView:
    """Insert an item; returns its view (what a read of the row would give)."""
    state = ItemState.FETCHED if item.reused_result is not None else ItemState.PENDING
    item_id = str(ULID())
    conn.execute(
        "INSERT INTO items (id, job_id, idx, input, path, name, size, device, inode, content_hash, state, result, "
        "task, provider, target_languages, options, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            item_id,
            job_id,
            idx,
            item.input,
            item.path,
            item.name,
            item.size,
            item.device,
            item.inode,
            item.content_hash,
            str(state),
            _dumps(dict(item.reused_result)) if item.reused_result is not None else None,
            item.task,
            item.provider,
            _dumps(list(item.target_languages)) if item.target_languages is not None else None,
            _dumps(dict(item.options)) if item.options is not None else None,
            now,
        ),
    )
    reused = item.reused_result
    transcript = reused.get("transcript") if reused else None
    return ItemView(item_id=ItemId(item_id), index=idx, input=item.input, state=state, transcript=transcript)


def _job_cost(item_rows: Sequence[sqlite3.Row]) -> str | None:
    total: dict[str, float] = {}
    for r in item_rows:
        if r["cost"] is None:
            continue
        c = _loads(r["cost"])
        total[c.get("currency", "USD")] = total.get(c.get("currency", "USD"), 0.0) + float(c["amount"])
    if not total:
        return None
    if len(total) == 1:
        currency, amount = next(iter(total.items()))
        return _dumps({"amount": round(amount, 8), "currency": currency})
    return _dumps({"amounts": total})


def read_outbox(conn: sqlite3.Connection, *, after: int, limit: int) -> list[OutboxRow]:
    """Outbox rows with ``seq`` above ``after``, oldest first (the relay process reads these)."""
    rows = conn.execute("SELECT * FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)).fetchall()
    return [
        OutboxRow(r["seq"], r["event_id"], r["job_id"], r["routing_key"], r["body"], r["reply_to"], r["correlation_id"])
        for r in rows
    ]


class JournalReader:
    """Read-only access for the CLI (``stenod jobs``, ``stenod job``), in the calling thread."""

    def __init__(self, path: Path) -> None:
        self._conn = connect(path, readonly=True)

    def job(self, job_id: str) -> JobView | None:
        return _job_view(self._conn, job_id)

    def jobs(self, state: str | None = None, limit: int = 50) -> list[JobView]:
        return _list_jobs(self._conn, state, limit)

    def close(self) -> None:
        self._conn.close()


_OPEN_ITEM_SQL = """
SELECT i.*, COALESCE(i.task, j.task) AS eff_task, COALESCE(i.provider, j.provider) AS eff_provider,
       j.language, COALESCE(i.target_languages, j.target_languages) AS eff_targets,
       COALESCE(i.options, j.options) AS eff_options, j.output,
       j.created_at AS job_created_at, j.cancel_requested
FROM items i JOIN jobs j ON j.id = i.job_id
"""


def _open_item(r: sqlite3.Row) -> OpenItem:
    return OpenItem(
        item_id=r["id"],
        job_id=r["job_id"],
        state=ItemState(r["state"]),
        task=r["eff_task"],
        provider=r["eff_provider"],
        language=r["language"],
        target_languages=tuple(_loads(r["eff_targets"])),
        options=_loads(r["eff_options"]),
        output=_loads(r["output"]),
        input=r["input"],
        name=r["name"],
        path=r["path"],
        size=r["size"],
        device=r["device"],
        inode=r["inode"],
        result=_loads(r["result"]),
        created_at=r["job_created_at"],
        cancel_requested=bool(r["cancel_requested"]),
    )


class SqliteJournal:
    """The daemon's journal. All calls run on the single writer thread."""

    def __init__(self, path: Path, *, outbox: bool = True, inline_transcript_bytes: int = 256 * 1024) -> None:
        self.path = path
        self._writer = WriterThread(path, migrate)
        self._outbox = outbox
        self._inline = inline_transcript_bytes
        # Set after any commit that may have added outbox rows; the relay waits on it.
        self.outbox_ready = asyncio.Event()
        # Jobs whose events a transaction added, appended on the writer thread and handed to
        # ``on_change`` (the HTTP streams' watch) once the commit returned.
        self._changed: collections.deque[str] = collections.deque()
        self.on_change: Callable[[set[str]], None] | None = None

    @classmethod
    def open(cls, path: Path, **kwargs: Any) -> SqliteJournal:
        journal = cls(path, **kwargs)
        journal._writer.start()
        return journal

    async def __aenter__(self) -> SqliteJournal:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._writer.close()

    async def _write(self, op: Callable[[sqlite3.Connection], T]) -> T:
        result = await self._writer.call(op)
        if self._outbox:
            self.outbox_ready.set()
        if self._changed:
            changed = set()
            while self._changed:
                changed.add(self._changed.popleft())
            if self.on_change is not None:
                self.on_change(changed)
        return result

    async def ping(self) -> bool:
        """The writer thread answers (the watchdog's health check)."""
        return bool(await self._writer.call(lambda c: c.execute("SELECT 1").fetchone()[0], write=False))

    # -- events ----------------------------------------------------------------

    def _emit(
        self, conn: sqlite3.Connection, kind: EventKind, row: sqlite3.Row | Mapping[str, Any], view: JobView
    ) -> None:
        """Record the event in the job's history and the outbox; ``row`` and ``view`` are the job
        as this transaction leaves it."""
        event = JobEvent.new(kind, view.job_id, view.provider, view.to_data(inline_transcript_bytes=self._inline))
        body = _dumps(event.envelope())
        conn.execute(
            "INSERT INTO job_events (event_id, job_id, kind, body, created_at) VALUES (?, ?, ?, ?, ?)",
            (event.id, view.job_id, str(kind), body, event.time),
        )
        self._changed.append(view.job_id)
        if not self._outbox:
            return
        reply_to = row["reply_to"] if kind.terminal else None
        conn.execute(
            "INSERT INTO outbox (event_id, job_id, routing_key, body, reply_to, correlation_id, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                event.id,
                view.job_id,
                event.routing_key,
                body,
                reply_to,
                row["correlation_id"] if reply_to else None,
                event.time,
            ),
        )

    def _refresh_job(self, conn: sqlite3.Connection, job_id: str) -> JobState:
        """Recompute the job's state from its items; on a change, store it and emit its event."""
        job = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        items = conn.execute(_ITEMS_SQL, (job_id,)).fetchall()
        old = JobState(job["state"])
        new = derive_job_state([ItemState(r["state"]) for r in items], cancel_requested=bool(job["cancel_requested"]))
        if new == old:
            return new
        if old.terminal:
            return old  # a terminal job never moves again
        now = utc_now()
        progress = 1.0 if new.terminal else None
        error = None
        if new == JobState.FAILED:
            errors = [_loads(r["error"]) for r in items if r["error"] is not None]
            if len(errors) == 1 or (errors and all(e["code"] == errors[0]["code"] for e in errors)):
                error = _dumps(errors[0])
            elif errors:
                error = _dumps(
                    {"code": "items_failed", "message": f"all {len(errors)} items failed", "retryable": False}
                )
        cost = _job_cost(items) if new.terminal else None
        conn.execute(
            "UPDATE jobs SET state = ?, updated_at = ?, progress = COALESCE(?, progress), "
            "error = COALESCE(?, error), cost = COALESCE(?, cost) WHERE id = ?",
            (str(new), now, progress, error, cost, job_id),
        )
        job = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        view = _view_of(job, items)
        kind = {
            JobState.SUBMITTED: EventKind.SUBMITTED,
            JobState.RUNNING: EventKind.PROGRESS,
        }.get(new) or EventKind(str(new))
        if new == JobState.RUNNING and old == JobState.ACCEPTED:
            self._emit(conn, EventKind.SUBMITTED, job, view)
        self._emit(conn, kind, job, view)
        return new

    # -- intake ---------------------------------------------------------------------

    async def create_job(self, new: NewJob) -> tuple[JobView, bool]:
        """Commit a job (and, for folder jobs, its seen-file record) and its accepted event.

        With a ``request_id`` that already exists, nothing is created and the existing job
        is returned with ``created=False`` (a redelivery or a client retry).
        """

        def op(conn: sqlite3.Connection) -> tuple[JobView, bool]:
            if new.request_id is not None:
                row = conn.execute("SELECT id FROM jobs WHERE request_id = ?", (new.request_id,)).fetchone()
                if row is not None:
                    view = _job_view(conn, row["id"])
                    assert view is not None
                    return view, False
            job_id = str(ULID())
            now = utc_now()
            conn.execute(
                "INSERT INTO jobs (id, request_id, source, task, provider, language, target_languages, options, "
                "output, state, reply_to, correlation_id, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'accepted', ?, ?, ?, ?)",
                (
                    job_id,
                    new.request_id,
                    new.source,
                    new.task,
                    new.provider,
                    new.language,
                    _dumps(list(new.target_languages)),
                    _dumps(dict(new.options or {})),
                    _dumps(dict(new.output or {})),
                    new.reply_to,
                    new.correlation_id,
                    now,
                    now,
                ),
            )
            items = tuple(_insert_item(conn, job_id, idx, item, now) for idx, item in enumerate(new.items))
            if new.retry_of is not None:
                conn.execute("INSERT INTO job_retries (job_id, retry_of) VALUES (?, ?)", (job_id, new.retry_of))
            if new.seen is not None:
                rule, path, dev, ino, size, mtime = new.seen
                conn.execute(
                    "INSERT OR REPLACE INTO seen_files (rule, path, device, inode, size, mtime_ns, job_id) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (rule, path, dev, ino, size, mtime, job_id),
                )
            # The view as a read of these rows would give it, without reading them back.
            view = JobView(
                job_id=JobId(job_id),
                request_id=new.request_id,
                task=new.task,
                provider=new.provider,
                state=JobState.ACCEPTED,
                progress=0.0,
                items=items,
                error=None,
                cost=None,
                created_at=now,
                updated_at=now,
                source=new.source,
                language=new.language,
                target_languages=tuple(new.target_languages),
            )
            self._emit(conn, EventKind.ACCEPTED, {"reply_to": new.reply_to, "correlation_id": new.correlation_id}, view)
            return view, True

        return await self._write(op)

    async def seen(self, rule: str, path: str, device: int, inode: int, size: int, mtime_ns: int) -> bool:
        """Was exactly this file (same inode, size, mtime) already taken by this rule?"""

        def op(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT device, inode, size, mtime_ns FROM seen_files WHERE rule = ? AND path = ?", (rule, path)
            ).fetchone()
            return row is not None and tuple(row) == (device, inode, size, mtime_ns)

        return await self._writer.call(op, write=False)

    async def forget_seen(self, rule: str, path: str) -> None:
        await self._writer.call(lambda c: c.execute("DELETE FROM seen_files WHERE rule = ? AND path = ?", (rule, path)))

    async def record_seen(self, rule: str, path: str, device: int, inode: int, size: int, mtime_ns: int) -> None:
        """Remember a file that was looked at but made no job (e.g. ignored), so rescans skip it."""
        await self._writer.call(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO seen_files (rule, path, device, inode, size, mtime_ns, job_id) "
                "VALUES (?, ?, ?, ?, ?, ?, NULL)",
                (rule, path, device, inode, size, mtime_ns),
            )
        )

    async def reusable_result(
        self,
        content_hash: str,
        provider: str,
        task: str,
        language: str | None,
        target_languages: Sequence[str],
        options: Mapping[str, Any],
    ) -> Mapping[str, Any] | None:
        """The result of an earlier succeeded item with the same content and the same request."""

        def op(conn: sqlite3.Connection) -> Mapping[str, Any] | None:
            row = conn.execute(
                "SELECT i.result FROM items i JOIN jobs j ON j.id = i.job_id WHERE i.content_hash = ? "
                "AND i.state = 'succeeded' AND i.result IS NOT NULL AND j.provider = ? AND j.task = ? "
                "AND j.language IS ? AND j.target_languages = ? AND j.options = ? ORDER BY i.id DESC LIMIT 1",
                (content_hash, provider, task, language, _dumps(list(target_languages)), _dumps(dict(options))),
            ).fetchone()
            return _loads(row["result"]) if row else None

        return await self._writer.call(op, write=False)

    # -- dispatcher ---------------------------------------------------------------------

    async def open_items(self, *, skip_providers: Sequence[str] = (), limit: int = 10_000) -> list[OpenItem]:
        """Items waiting to be packed (pending, no provider job) or with a result to write,
        oldest first. Pending items of ``skip_providers`` (at capacity) are left out, unless
        their job is to be cancelled."""

        def op(conn: sqlite3.Connection) -> list[OpenItem]:
            skip = ",".join("?" * len(skip_providers))
            pending = "i.state = 'pending' AND i.batch_id IS NULL"
            if skip_providers:
                pending += f" AND (COALESCE(i.provider, j.provider) NOT IN ({skip}) OR j.cancel_requested = 1)"
            rows = conn.execute(
                _OPEN_ITEM_SQL + f" WHERE ({pending}) OR (i.state = 'fetched' AND i.batch_id IS NULL) "
                "ORDER BY i.id LIMIT ?",
                (*skip_providers, limit),
            ).fetchall()
            return [_open_item(r) for r in rows]

        return await self._writer.call(op, write=False)

    async def active_batches(self) -> list[BatchRow]:
        def op(conn: sqlite3.Connection) -> list[BatchRow]:
            rows = conn.execute("SELECT id FROM batches WHERE state NOT IN ('done', 'failed')").fetchall()
            return [b for r in rows if (b := self._batch(conn, r["id"])) is not None]

        return await self._writer.call(op, write=False)

    async def batch(self, batch_id: str) -> BatchRow | None:
        return await self._writer.call(lambda c: self._batch(c, batch_id), write=False)

    def _batch(self, conn: sqlite3.Connection, batch_id: str) -> BatchRow | None:
        row = conn.execute("SELECT * FROM batches WHERE id = ?", (batch_id,)).fetchone()
        if row is None:
            return None
        items = tuple(
            _open_item(r) for r in conn.execute(_OPEN_ITEM_SQL + " WHERE i.batch_id = ? ORDER BY i.id", (batch_id,))
        )
        return BatchRow(
            batch_id=row["id"],
            provider=row["provider"],
            state=BatchState(row["state"]),
            handle=_loads(row["handle"]),
            checkpoint=_loads(row["checkpoint"]),
            attempts=row["attempts"],
            next_at=row["next_at"],
            last_poll_at=row["last_poll_at"],
            items=items,
        )

    async def create_batch(self, provider: str, item_ids: Sequence[str], *, next_at: float) -> BatchRow:
        """Record the intent to submit these items as one provider job (before any remote call)."""

        def op(conn: sqlite3.Connection) -> BatchRow:
            batch_id = str(ULID())
            now = utc_now()
            conn.execute(
                "INSERT INTO batches (id, provider, state, next_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                (batch_id, provider, str(BatchState.SUBMITTING), next_at, now, now),
            )
            conn.executemany(
                "UPDATE items SET batch_id = ?, updated_at = ? WHERE id = ? AND state = 'pending' AND batch_id IS NULL",
                [(batch_id, now, item_id) for item_id in item_ids],
            )
            batch = self._batch(conn, batch_id)
            assert batch is not None
            return batch

        return await self._write(op)

    async def save_checkpoint(self, batch_id: str, data: Mapping[str, Any]) -> None:
        text = _dumps(dict(data))
        await self._writer.call(
            lambda c: c.execute(
                "UPDATE batches SET checkpoint = ?, updated_at = ? WHERE id = ?", (text, utc_now(), batch_id)
            )
        )

    async def batch_submitted(self, batch_id: str, handle: Mapping[str, Any], *, next_at: float) -> None:
        def op(conn: sqlite3.Connection) -> None:
            now = utc_now()
            conn.execute(
                "UPDATE batches SET state = ?, handle = ?, attempts = 0, next_at = ?, error = NULL, updated_at = ? "
                "WHERE id = ?",
                (str(BatchState.POLLING), _dumps(dict(handle)), next_at, now, batch_id),
            )
            self._move_items(conn, batch_id, ItemState.SUBMITTED)

        await self._write(op)

    def _move_items(self, conn: sqlite3.Connection, batch_id: str, state: ItemState) -> None:
        now = utc_now()
        jobs: set[str] = set()
        for r in conn.execute("SELECT id, job_id, state FROM items WHERE batch_id = ?", (batch_id,)).fetchall():
            current = ItemState(r["state"])
            if current.terminal or current == state:
                continue
            check_item_transition(current, state)
            conn.execute("UPDATE items SET state = ?, updated_at = ? WHERE id = ?", (str(state), now, r["id"]))
            jobs.add(r["job_id"])
        for job_id in sorted(jobs):
            self._refresh_job(conn, job_id)

    async def batch_polled(
        self, batch_id: str, *, running: bool, progress: float | None, next_at: float, poll_time: float
    ) -> list[str]:
        """Record a poll; returns the ids of jobs whose progress changed."""

        def op(conn: sqlite3.Connection) -> list[str]:
            conn.execute(
                "UPDATE batches SET attempts = 0, next_at = ?, last_poll_at = ?, error = NULL, updated_at = ? "
                "WHERE id = ?",
                (next_at, poll_time, utc_now(), batch_id),
            )
            if running:
                self._move_items(conn, batch_id, ItemState.RUNNING)
            changed: list[str] = []
            if progress is not None:
                for (job_id,) in conn.execute(
                    "SELECT DISTINCT job_id FROM items WHERE batch_id = ?", (batch_id,)
                ).fetchall():
                    cur = conn.execute(
                        "UPDATE jobs SET progress = ? WHERE id = ? AND progress < ? AND state NOT IN "
                        "('succeeded', 'partial', 'failed', 'cancelled')",
                        (progress, job_id, progress),
                    )
                    if cur.rowcount:
                        changed.append(job_id)
            return changed

        return await self._write(op)

    async def set_progress(self, job_ids: Iterable[str], progress: float) -> None:
        ids = list(job_ids)
        await self._writer.call(
            lambda c: c.executemany(
                "UPDATE jobs SET progress = ? WHERE id = ? AND progress < ?", [(progress, j, progress) for j in ids]
            )
        )

    async def emit_progress(self, job_id: str) -> None:
        """A (rate-limited by the caller) progress event for a running job."""

        def op(conn: sqlite3.Connection) -> None:
            snapshot = _snapshot(conn, job_id)
            if snapshot is not None and not snapshot[1].state.terminal:
                self._emit(conn, EventKind.PROGRESS, *snapshot)

        await self._write(op)

    async def batch_state(self, batch_id: str, state: BatchState, *, next_at: float | None = None) -> None:
        await self._writer.call(
            lambda c: c.execute(
                "UPDATE batches SET state = ?, next_at = COALESCE(?, next_at), updated_at = ? WHERE id = ?",
                (str(state), next_at, utc_now(), batch_id),
            )
        )

    async def batch_retry(self, batch_id: str, *, attempts: int, next_at: float, error: ErrorInfo) -> None:
        await self._writer.call(
            lambda c: c.execute(
                "UPDATE batches SET attempts = ?, next_at = ?, error = ?, updated_at = ? WHERE id = ?",
                (attempts, next_at, _dumps(error.to_json()), utc_now(), batch_id),
            )
        )

    async def finish_items(
        self,
        outcomes: Sequence[ItemOutcome],
        *,
        batch_id: str | None = None,
        batch_state: BatchState | None = None,
        batch_error: ErrorInfo | None = None,
    ) -> None:
        """Commit item outcomes (and optionally close their provider job) with the events they cause."""

        def op(conn: sqlite3.Connection) -> None:
            now = utc_now()
            jobs: set[str] = set()
            for o in outcomes:
                row = conn.execute("SELECT job_id, state FROM items WHERE id = ?", (o.item_id,)).fetchone()
                if row is None or ItemState(row["state"]).terminal:
                    continue
                check_item_transition(ItemState(row["state"]), o.state)
                conn.execute(
                    "UPDATE items SET state = ?, outputs = ?, error = ?, result = COALESCE(?, result), "
                    "cost = ?, updated_at = ? WHERE id = ?",
                    (
                        str(o.state),
                        _dumps(list(o.outputs)),
                        _dumps(o.error.to_json()) if o.error else None,
                        _dumps(dict(o.result)) if o.result is not None else None,
                        _dumps(dict(o.cost)) if o.cost else None,
                        now,
                        o.item_id,
                    ),
                )
                jobs.add(row["job_id"])
                if o.follow_up is not None and o.state == ItemState.SUCCEEDED:
                    (last,) = conn.execute("SELECT MAX(idx) FROM items WHERE job_id = ?", (row["job_id"],)).fetchone()
                    _insert_item(conn, row["job_id"], last + 1, o.follow_up, now)
            if batch_id is not None and batch_state is not None:
                conn.execute(
                    "UPDATE batches SET state = ?, error = ?, updated_at = ? WHERE id = ?",
                    (str(batch_state), _dumps(batch_error.to_json()) if batch_error else None, now, batch_id),
                )
            for job_id in sorted(jobs):
                self._refresh_job(conn, job_id)

        await self._write(op)

    async def attach_download(self, item_id: str, path: str, size: int, device: int, inode: int) -> None:
        """A URL input was downloaded: the item now has a local file and can be packed."""
        await self._writer.call(
            lambda c: c.execute(
                "UPDATE items SET path = ?, size = ?, device = ?, inode = ?, updated_at = ? WHERE id = ?",
                (path, size, device, inode, utc_now(), item_id),
            )
        )

    async def release_items(self, batch_id: str, item_ids: Sequence[str]) -> None:
        """Return items to the queue (their provider job ended without them)."""
        await self._writer.call(
            lambda c: c.executemany(
                "UPDATE items SET batch_id = NULL, state = 'pending', updated_at = ? WHERE id = ? AND batch_id = ?",
                [(utc_now(), i, batch_id) for i in item_ids],
            )
        )

    # -- cancel -----------------------------------------------------------------------

    async def request_cancel(self, job_id: str) -> JobView | None:
        def op(conn: sqlite3.Connection) -> JobView | None:
            conn.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
            return _job_view(conn, job_id)

        return await self._write(op)

    async def cancel_requested_jobs(self) -> list[str]:
        return await self._writer.call(
            lambda c: [
                r[0]
                for r in c.execute(
                    "SELECT id FROM jobs WHERE cancel_requested = 1 AND state NOT IN "
                    "('succeeded', 'partial', 'failed', 'cancelled')"
                ).fetchall()
            ],
            write=False,
        )

    # -- reads ----------------------------------------------------------------------

    async def job(self, job_id: str) -> JobView | None:
        return await self._writer.call(lambda c: _job_view(c, job_id), write=False)

    async def job_by_request(self, request_id: str) -> JobView | None:
        def op(conn: sqlite3.Connection) -> JobView | None:
            row = conn.execute("SELECT id FROM jobs WHERE request_id = ?", (request_id,)).fetchone()
            return _job_view(conn, row[0]) if row else None

        return await self._writer.call(op, write=False)

    async def jobs(
        self,
        state: str | None = None,
        limit: int = 50,
        *,
        provider: str | None = None,
        before: str | None = None,
    ) -> list[JobView]:
        """Newest first; ``before`` (a job id) pages back through older jobs."""
        return await self._writer.call(lambda c: _list_jobs(c, state, limit, provider, before), write=False)

    async def retry_links(self, job_id: str) -> tuple[str | None, list[str]]:
        """The job this one retried, and the jobs that retried this one."""

        def op(conn: sqlite3.Connection) -> tuple[str | None, list[str]]:
            row = conn.execute("SELECT retry_of FROM job_retries WHERE job_id = ?", (job_id,)).fetchone()
            later = conn.execute("SELECT job_id FROM job_retries WHERE retry_of = ? ORDER BY job_id", (job_id,))
            return (row[0] if row else None), [r[0] for r in later]

        return await self._writer.call(op, write=False)

    async def repeat_of(self, job_id: str) -> NewJob | None:
        """A new job with the same request as ``job_id`` (its inputs as they were recorded)."""

        def op(conn: sqlite3.Connection) -> NewJob | None:
            job = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if job is None:
                return None
            items = conn.execute(
                "SELECT * FROM items WHERE job_id = ? AND task IS NULL ORDER BY idx", (job_id,)
            ).fetchall()  # a chained step's items are made again by the new job
            return NewJob(
                source=job["source"],
                task=job["task"],
                provider=job["provider"],
                items=[NewItem(input=r["input"], name=r["name"], path=r["path"]) for r in items],
                language=job["language"],
                target_languages=tuple(_loads(job["target_languages"])),
                options=_loads(job["options"]),
                output=_loads(job["output"]),
                retry_of=job_id,
            )

        return await self._writer.call(op, write=False)

    async def editable_item(self, job_id: str, index: int) -> EditableItem | None:
        """An item's transcripts (the engine's and the correction) and its files."""

        def op(conn: sqlite3.Connection) -> EditableItem | None:
            row = conn.execute(
                "SELECT items.*, item_edits.transcript AS edited FROM items LEFT JOIN item_edits "
                "ON item_edits.item_id = items.id WHERE items.job_id = ? AND items.idx = ?",
                (job_id, index),
            ).fetchone()
            if row is None:
                return None
            original = (_loads(row["result"]) or {}).get("transcript") if row["result"] else None
            return EditableItem(
                item_id=row["id"],
                input=row["input"],
                name=row["name"],
                path=row["path"],
                outputs=tuple(_loads(row["outputs"]) or ()),
                original=original,
                edited=_loads(row["edited"]) if row["edited"] else None,
            )

        return await self._writer.call(op, write=False)

    async def save_edit(self, item_id: str, transcript: Mapping[str, Any] | None) -> None:
        """Store a correction (None: drop it, the engine's transcript counts again)."""
        if transcript is None:
            await self._writer.call(lambda c: c.execute("DELETE FROM item_edits WHERE item_id = ?", (item_id,)))
            return
        await self._writer.call(
            lambda c: c.execute(
                "INSERT INTO item_edits (item_id, transcript, edited_at) VALUES (?, ?, ?) "
                "ON CONFLICT (item_id) DO UPDATE SET transcript = excluded.transcript, edited_at = excluded.edited_at",
                (item_id, _dumps(dict(transcript)), utc_now()),
            )
        )

    async def events(self, job_id: str, *, after: int = 0, limit: int = 500) -> list[tuple[int, str]]:
        """The job's events after sequence number ``after``, oldest first: (seq, CloudEvent JSON)."""
        return await self._writer.call(
            lambda c: [
                (r[0], r[1])
                for r in c.execute(
                    "SELECT seq, body FROM job_events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                    (job_id, after, limit),
                )
            ],
            write=False,
        )

    async def event_seq(self, job_id: str, event_id: str) -> int | None:
        """The sequence number of one of the job's events (an SSE ``Last-Event-ID``)."""
        row = await self._writer.call(
            lambda c: c.execute(
                "SELECT seq FROM job_events WHERE job_id = ? AND event_id = ?", (job_id, event_id)
            ).fetchone(),
            write=False,
        )
        return int(row[0]) if row else None

    async def live_paths(self, prefix: str) -> set[str]:
        """Input paths under ``prefix`` of items not yet finished (spool files still needed)."""
        return await self._writer.call(
            lambda c: {
                r[0]
                for r in c.execute(
                    "SELECT path FROM items WHERE path >= ? AND path < ? AND state NOT IN "
                    "('succeeded', 'failed', 'cancelled')",
                    (prefix, prefix + "\uffff"),
                )
            },
            write=False,
        )

    async def counts(self) -> dict[str, dict[str, int]]:
        """Jobs by provider and state (metrics, STATUS lines)."""

        def op(conn: sqlite3.Connection) -> dict[str, dict[str, int]]:
            out: dict[str, dict[str, int]] = {}
            for r in conn.execute("SELECT provider, state, COUNT(*) FROM jobs GROUP BY provider, state"):
                out.setdefault(r[0], {})[r[1]] = r[2]
            return out

        return await self._writer.call(op, write=False)

    # -- outbox -----------------------------------------------------------------------

    async def emit_for_existing(self, job_id: str) -> None:
        """Re-publish a job's current state (a repeated request_id gets the existing job's events)."""

        def op(conn: sqlite3.Connection) -> None:
            snapshot = _snapshot(conn, job_id)
            if snapshot is None:
                return
            row, view = snapshot
            kind = (
                EventKind(str(view.state))
                if view.state.terminal
                else (
                    EventKind.ACCEPTED
                    if view.state == JobState.ACCEPTED
                    else EventKind.SUBMITTED
                    if view.state == JobState.SUBMITTED
                    else EventKind.PROGRESS
                )
            )
            self._emit(conn, kind, row, view)

        await self._write(op)

    async def add_event(
        self, event: JobEvent, *, reply_to: str | None = None, correlation_id: str | None = None
    ) -> None:
        """An event about something that is not a job row (e.g. a rejected request)."""
        if not self._outbox:
            return
        await self._write(
            lambda c: c.execute(
                "INSERT INTO outbox (event_id, job_id, routing_key, body, reply_to, correlation_id, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    event.id,
                    event.job_id,
                    event.routing_key,
                    _dumps(event.envelope()),
                    reply_to,
                    correlation_id,
                    event.time,
                ),
            )
        )

    async def outbox_batch(self, limit: int = 100) -> list[OutboxRow]:
        return await self._writer.call(lambda c: read_outbox(c, after=0, limit=limit), write=False)

    async def outbox_delete(self, seqs: Sequence[int]) -> None:
        await self._writer.call(lambda c: c.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs]))

    async def outbox_depth(self) -> int:
        return int(
            await self._writer.call(lambda c: c.execute("SELECT COUNT(*) FROM outbox").fetchone()[0], write=False)
        )
