"""The journal's reads on SQL: what the dispatcher, the sources, the CLI, the page and the
HTTP API look at, each one operation of :mod:`stenod.adapters.sql.views` run by the
driver. :class:`~stenod.adapters.sql.journal.SqlJournal` adds the changes."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from stenod.adapters.sql import own_outputs, views
from stenod.adapters.sql.statements import Op, diarization_text, dumps
from stenod.corrections import EditableItem
from stenod.jobs import JobView
from stenod.journal import BatchRow, NewJob, OpenItem, OutboxRow, OwnOutput
from stenod.speakers import Diarization

T = TypeVar("T")


class Driver(Protocol):
    """Runs one operation in one transaction; ``make`` is called again for each attempt
    (a driver may retry an operation that lost a race with another instance)."""

    async def run(self, make: Callable[[], Op[T]], *, write: bool) -> T: ...


class SqlReads:
    """The journal's reads, for any driver."""

    def __init__(self, driver: Driver) -> None:
        self._driver = driver

    async def _read(self, make: Callable[[], Op[T]]) -> T:
        return await self._driver.run(make, write=False)

    async def seen(self, rule: str, path: str, device: int, inode: int, size: int, mtime_ns: int) -> bool:
        """Was exactly this file (same inode, size, mtime) already taken by this rule?"""
        found = await self._read(lambda: views.seen(rule, path))
        return found == (inode, size, mtime_ns)

    async def own_output(self, key: str) -> OwnOutput | None:
        """stenod's record of the file at ``key`` (see ``OutputFile.key``), if it wrote one there."""
        return await self._read(lambda: own_outputs.own_output(key))

    async def reusable_result(
        self,
        content_hash: str,
        provider: str,
        task: str,
        language: str | None,
        target_languages: Sequence[str],
        options: Mapping[str, Any],
        diarization: Diarization | None = None,
    ) -> Mapping[str, Any] | None:
        """The result of an earlier succeeded item with the same content and the same request
        (who spoke included: a transcript without speakers does not answer a request for them)."""
        targets, opts = dumps(list(target_languages)), dumps(dict(options))
        asked = diarization_text(diarization)
        return await self._read(
            lambda: views.reusable_result(content_hash, provider, task, language, targets, opts, asked)
        )

    async def open_items(self, *, skip_providers: Sequence[str] = (), limit: int = 10_000) -> list[OpenItem]:
        return await self._read(lambda: views.open_items(skip_providers, limit))

    async def active_batches(self) -> list[BatchRow]:
        """Every unfinished provider job, whoever holds it (a read: it claims nothing)."""
        return await self._read(views.active_batches)

    async def batch(self, batch_id: str) -> BatchRow | None:
        return await self._read(lambda: views.batch(batch_id))

    async def cancel_requested_jobs(self) -> list[str]:
        return await self._read(views.cancel_requested_jobs)

    async def job(self, job_id: str) -> JobView | None:
        return await self._read(lambda: views.job_view(job_id))

    async def job_by_request(self, request_id: str) -> JobView | None:
        return await self._read(lambda: views.job_by_request(request_id))

    async def jobs(
        self, state: str | None = None, limit: int = 50, *, provider: str | None = None, before: str | None = None
    ) -> list[JobView]:
        """Newest first; ``before`` (a job id) pages back through older jobs."""
        return await self._read(lambda: views.list_jobs(state, limit, provider, before))

    async def retry_links(self, job_id: str) -> tuple[str | None, list[str]]:
        """The job this one retried, and the jobs that retried this one."""
        return await self._read(lambda: views.retry_links(job_id))

    async def repeat_of(self, job_id: str) -> NewJob | None:
        """A new job with the same request as ``job_id`` (its inputs as they were recorded)."""
        return await self._read(lambda: views.repeat_of(job_id))

    async def editable_item(self, job_id: str, index: int) -> EditableItem | None:
        return await self._read(lambda: views.editable_item(job_id, index))

    async def events(self, job_id: str, *, after: int = 0, limit: int = 500) -> list[tuple[int, str]]:
        """The job's events after sequence number ``after``, oldest first: (seq, CloudEvent JSON)."""
        return await self._read(lambda: views.events(job_id, after, limit))

    async def event_seq(self, job_id: str, event_id: str) -> int | None:
        """The sequence number of one of the job's events (an SSE ``Last-Event-ID``)."""
        return await self._read(lambda: views.event_seq(job_id, event_id))

    async def live_paths(self, prefix: str) -> set[str]:
        """Input paths under ``prefix`` of items not yet finished (spool files still needed)."""
        return await self._read(lambda: views.live_paths(prefix))

    async def counts(self) -> dict[str, dict[str, int]]:
        """Jobs by provider and state (metrics, STATUS lines)."""
        return await self._read(views.counts)

    async def outbox_batch(self, limit: int = 100) -> list[OutboxRow]:
        return await self._read(lambda: views.outbox(0, limit))

    async def outbox_depth(self) -> int:
        return await self._read(views.outbox_depth)
