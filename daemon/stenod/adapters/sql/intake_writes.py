"""Writes that take work in or change it from outside: new jobs (also one that finished
before it was recorded), seen files, cancels and corrections by hand."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ulid import ULID

from stenod.adapters.sql.emit import Emitter, emit
from stenod.adapters.sql.statements import All, Exec, One, Op, diarization_text, dumps
from stenod.adapters.sql.views import job_by_request, job_view
from stenod.events import EventKind, utc_now
from stenod.jobs import ItemId, ItemState, ItemView, JobId, JobState, JobView
from stenod.journal import NewItem, NewJob

_SEEN_UPSERT = (
    "INSERT INTO seen_files (rule, path, device, inode, size, mtime_ns, job_id) VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (rule, path) DO UPDATE SET device = excluded.device, inode = excluded.inode, "
    "size = excluded.size, mtime_ns = excluded.mtime_ns, job_id = excluded.job_id"
)


_SEEN_CLAIM = (
    "INSERT INTO seen_files (rule, path, device, inode, size, mtime_ns, job_id) VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (rule, path) DO UPDATE SET device = excluded.device, inode = excluded.inode, "
    "size = excluded.size, mtime_ns = excluded.mtime_ns, job_id = excluded.job_id "
    "WHERE seen_files.job_id IS NULL OR seen_files.inode <> excluded.inode OR seen_files.size <> excluded.size "
    "OR seen_files.mtime_ns <> excluded.mtime_ns RETURNING path"
)


def insert_item(job_id: str, idx: int, item: NewItem, now: str) -> Op[ItemView]:
    """Insert an item; returns its view (what a read of the row would give). An item with
    its own ``result`` has succeeded; one with a ``reused_result`` waits for its outputs."""
    result: Mapping[str, Any] | None
    if item.result is not None:
        state, result = ItemState.SUCCEEDED, item.result
    else:
        state = ItemState.FETCHED if item.reused_result is not None else ItemState.PENDING
        result = item.reused_result
    item_id = str(ULID())
    yield Exec(
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
            dumps(dict(result)) if result is not None else None,
            item.task,
            item.provider,
            dumps(list(item.target_languages)) if item.target_languages is not None else None,
            dumps(dict(item.options)) if item.options is not None else None,
            now,
        ),
    )
    transcript = result.get("transcript") if result else None
    return ItemView(item_id=ItemId(item_id), index=idx, input=item.input, state=state, transcript=transcript)


def create_job(em: Emitter, new: NewJob, instance: str | None = None) -> Op[tuple[JobView, bool]]:
    """Commit a job (and, for folder jobs, its seen-file record) and its accepted event.

    With a ``request_id`` that already exists, nothing is created and the existing job is
    returned with ``created=False`` (a redelivery or a client retry).
    """
    job_id = str(ULID())
    now = utc_now()
    if new.seen is not None:
        # The file is claimed first: of several instances watching one shared folder, the
        # one whose upsert wins makes the job; the others (waiting on the row, then seeing
        # the same file already has a job) return that job. The device is left out of the
        # comparison: two machines number one network mount differently.
        claimed = yield All(_SEEN_CLAIM, (*new.seen, job_id))
        if not claimed:
            row = yield One("SELECT job_id FROM seen_files WHERE rule = ? AND path = ?", new.seen[:2])
            existing = yield from job_view(row["job_id"])
            if existing is not None:
                return existing, False
            yield Exec(_SEEN_UPSERT, (*new.seen, job_id))  # its job is gone: take the file again
    # With a request_id that exists, the insert does nothing (it waits for a concurrent one
    # with the same id to commit first): then the job is the one that exists.
    inserted = yield All(
        "INSERT INTO jobs (id, request_id, source, task, provider, language, target_languages, options, "
        "output, state, reply_to, correlation_id, created_at, updated_at, instance, diarization) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'accepted', ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (request_id) DO NOTHING RETURNING id",
        (
            job_id,
            new.request_id,
            new.source,
            new.task,
            new.provider,
            new.language,
            *_job_texts(new),
            new.reply_to,
            new.correlation_id,
            now,
            now,
            instance,
            diarization_text(new.diarization),
        ),
    )
    if not inserted:
        existing = yield from job_by_request(str(new.request_id))
        assert existing is not None
        return existing, False
    items = []
    for idx, item in enumerate(new.items):
        items.append((yield from insert_item(job_id, idx, item, now)))
    if new.retry_of is not None:
        yield Exec("INSERT INTO job_retries (job_id, retry_of) VALUES (?, ?)", (job_id, new.retry_of))
    view = _new_view(job_id, new, items, JobState.ACCEPTED, now)
    emit(em, EventKind.ACCEPTED, {"reply_to": new.reply_to, "correlation_id": new.correlation_id}, view)
    return view, True


def record_finished_job(em: Emitter, new: NewJob, instance: str | None = None) -> Op[JobView]:
    """Commit a job that finished before it was journaled (a voice command answered in
    memory): the job and its items (each with its ``result``, no files) succeeded, and the
    job's ``succeeded`` event, its only one."""
    job_id = str(ULID())
    now = utc_now()
    yield Exec(
        "INSERT INTO jobs (id, request_id, source, task, provider, language, target_languages, options, "
        "output, state, progress, created_at, updated_at, instance) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'succeeded', 1.0, ?, ?, ?)",
        (
            job_id,
            new.request_id,
            new.source,
            new.task,
            new.provider,
            new.language,
            *_job_texts(new),
            now,
            now,
            instance,
        ),
    )
    items = []
    for idx, item in enumerate(new.items):
        items.append((yield from insert_item(job_id, idx, item, now)))
    view = _new_view(job_id, new, items, JobState.SUCCEEDED, now)
    emit(em, EventKind.SUCCEEDED, {"reply_to": None, "correlation_id": None}, view)
    return view


def _job_texts(new: NewJob) -> tuple[str, str, str]:
    """A new job's target languages, options and output settings, as the ``jobs`` row keeps them."""
    output = new.output.to_json() if new.output is not None else {}
    return dumps(list(new.target_languages)), dumps(dict(new.options or {})), dumps(output)


def _new_view(job_id: str, new: NewJob, items: list[ItemView], state: JobState, now: str) -> JobView:
    """The view of a job just inserted, as a read of its rows would give it, without reading them back."""
    return JobView(
        job_id=JobId(job_id),
        request_id=new.request_id,
        task=new.task,
        provider=new.provider,
        state=state,
        progress=1.0 if state == JobState.SUCCEEDED else 0.0,
        items=tuple(items),
        error=None,
        cost=None,
        created_at=now,
        updated_at=now,
        source=new.source,
        language=new.language,
        target_languages=tuple(new.target_languages),
    )


def record_seen(rule: str, path: str, device: int, inode: int, size: int, mtime_ns: int) -> Op[None]:
    """Remember a file that was looked at but made no job (e.g. ignored), so rescans skip it."""
    yield Exec(_SEEN_UPSERT, (rule, path, device, inode, size, mtime_ns, None))


def forget_seen(rule: str, path: str) -> Op[None]:
    yield Exec("DELETE FROM seen_files WHERE rule = ? AND path = ?", (rule, path))


def request_cancel(job_id: str) -> Op[JobView | None]:
    yield Exec("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
    return (yield from job_view(job_id))


def save_edit(item_id: str, transcript: Mapping[str, Any] | None) -> Op[None]:
    """Store a correction (None: drop it, the engine's transcript counts again)."""
    if transcript is None:
        yield Exec("DELETE FROM item_edits WHERE item_id = ?", (item_id,))
        return
    yield Exec(
        "INSERT INTO item_edits (item_id, transcript, edited_at) VALUES (?, ?, ?) "
        "ON CONFLICT (item_id) DO UPDATE SET transcript = excluded.transcript, edited_at = excluded.edited_at",
        (item_id, dumps(dict(transcript)), utc_now()),
    )
