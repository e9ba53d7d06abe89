"""The Vachana (Gnani.ai) STT v3 batch provider on the documented submit/status API.

One multipart submit carries up to 10 files; results come back inline in the status
answer, which may be asked for at most once a minute per job.

Submitting is not idempotent at Vachana and there is no way to look a job up by our
request id. ``submit`` therefore checkpoints just before the last bytes of the upload
leave ("sent"): a crash before that point cannot have created a job and is simply
submitted again; a crash or lost answer after it is *uncertain*. By default an
uncertain submit fails the files with a message naming the request id (no double
billing, a person decides); ``resubmit_uncertain = true`` sends them again instead.
Residual risk: with the default, a job that did start at Vachana is paid for but its
transcript is not collected; with ``resubmit_uncertain`` the audio may be paid twice.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel

from stenod.provider import (
    Batch,
    BatchItem,
    FileUpload,
    Handle,
    ItemResult,
    JobError,
    Json,
    Limits,
    MultipartBody,
    PermanentError,
    ProviderSettings,
    RemoteState,
    RetryableError,
    Status,
    StepContext,
)

from .api import UncertainSubmit, VachanaApi
from .options import LANGUAGES, LIMITS, MAX_BODY_BYTES, VachanaOptions, VachanaSettings
from .results import item_results, remote_state, status_of

_CACHE_JOBS = 256


@dataclass(frozen=True, slots=True)
class _Plan:
    fields: list[tuple[str, str]]
    files: tuple[tuple[BatchItem, str], ...]

    def body(self) -> MultipartBody:
        return MultipartBody(
            self.fields, [("audio_files", FileUpload(name, item.size, item.open)) for item, name in self.files]
        )


class VachanaProvider:
    """Vachana batch jobs. Finished results are kept in memory between the poll that saw
    them and the fetch (a second status call would have to wait another minute)."""

    name: ClassVar[str] = "vachana"
    Settings: ClassVar[type[ProviderSettings]] = VachanaSettings
    Options: ClassVar[type[BaseModel]] = VachanaOptions
    limits: Limits = LIMITS

    def __init__(self, settings: VachanaSettings, http: httpx.AsyncClient) -> None:
        self._api = VachanaApi(http, settings)
        self._resubmit_uncertain = settings.resubmit_uncertain
        self._finished: OrderedDict[str, list[ItemResult]] = OrderedDict()

    async def submit(self, batch: Batch, ctx: StepContext) -> Handle:
        """Upload the batch in one multipart submit, or return the job in ``ctx.saved``.

        Raises PermanentError (a limit or option the batch breaks, or an uncertain earlier
        submit, see the module docstring), AuthError, RetryableError.
        """
        plan = _plan(batch)
        request_id = request_id_for(batch.batch_id)
        saved: dict[str, Any] = dict(ctx.saved or {})
        if saved.get("job_id"):
            return _handle(batch, plan, saved["job_id"], request_id)
        if saved.get("phase") == "sent" and not self._resubmit_uncertain:
            raise _uncertain(request_id, len(plan.files))
        body = plan.body()
        if body.length > MAX_BODY_BYTES:
            raise PermanentError(
                f"vachana takes at most {MAX_BODY_BYTES} bytes per submit (max_batch_bytes), this one is {body.length}",
                code="limit_max_batch_bytes",
            )
        total, done = max(1, body.length), 0

        def sent(n: int) -> None:
            nonlocal done
            done += n
            ctx.progress(min(1.0, done / total))

        sent_recorded = False

        async def body_sent() -> None:
            nonlocal sent_recorded
            await ctx.checkpoint({"phase": "sent", "request_id": request_id})
            sent_recorded = True

        try:
            job_id = await self._api.submit(body, request_id, body_sent=body_sent, sent=sent)
        except UncertainSubmit as exc:
            if self._resubmit_uncertain:
                raise
            raise _uncertain(request_id, len(plan.files), exc.message) from exc
        except JobError:
            if sent_recorded or (ctx.saved or {}).get("phase") == "sent":
                # Vachana answered with a refusal: nothing was created, a retry is safe.
                await ctx.checkpoint({"phase": "refused", "request_id": request_id})
            raise
        await ctx.checkpoint({"phase": "submitted", "request_id": request_id, "job_id": job_id})
        return _handle(batch, plan, job_id, request_id)

    async def poll(self, handle: Handle) -> Status:
        """The job's state; once finished, its per-file outcomes (kept for ``fetch``)."""
        job = await self._api.status(handle["job_id"], handle["request_id"])
        results: list[ItemResult] = []
        if remote_state(job) is RemoteState.DONE:
            results = item_results(job, _files(handle), handle.get("language"))
            self._remember(handle["job_id"], results)
        return status_of(job, results)

    async def fetch(self, handle: Handle) -> Sequence[ItemResult]:
        """The per-file results: from the poll that saw the job finish, or (after a
        restart) from a new status call, which Vachana may answer with 429 until a
        minute has passed (RetryableError with its Retry-After)."""
        cached = self._finished.pop(handle["job_id"], None)
        if cached is not None:
            return cached
        job = await self._api.status(handle["job_id"], handle["request_id"])
        if remote_state(job) is not RemoteState.DONE:
            raise RetryableError(
                f"vachana job {handle['job_id']} is {job.status}, not finished yet", code="not_finished"
            )
        return item_results(job, _files(handle), handle.get("language"))

    async def cancel(self, handle: Handle) -> None:
        """The submit/status API has no cancel: the job runs to its end at Vachana."""
        self._finished.pop(handle["job_id"], None)

    def _remember(self, job_id: str, results: list[ItemResult]) -> None:
        self._finished[job_id] = results
        self._finished.move_to_end(job_id)
        while len(self._finished) > _CACHE_JOBS:
            self._finished.popitem(last=False)


def request_id_for(batch_id: str) -> str:
    """The ``X-API-Request-ID`` of every call for this batch: stable across restarts so
    Vachana support can trace the job."""
    return f"stenod-{batch_id}"


def _uncertain(request_id: str, files: int, detail: str | None = None) -> PermanentError:
    cause = f" ({detail})" if detail else ""
    return PermanentError(
        f"vachana: the upload of {files} file(s) was sent in full but Vachana's answer was lost{cause}; "
        f"the job may exist and be billed, so stenod does not send it again (X-API-Request-ID {request_id})",
        code="vachana_submit_uncertain",
        hint=f"Ask Vachana support about X-API-Request-ID {request_id}. To transcribe anyway, drop the files "
        "again, or set [providers.vachana] resubmit_uncertain = true to resend automatically.",
    )


def _files(handle: Handle) -> list[tuple[str, str, float | None]]:
    return [(f[0], f[1], f[2]) for f in handle["files"]]


def _handle(batch: Batch, plan: _Plan, job_id: str, request_id: str) -> dict[str, Json]:
    return {
        "job_id": job_id,
        "request_id": request_id,
        "language": batch.language,
        "files": [[item.item_id, name, item.duration] for item, name in plan.files],
    }


def _plan(batch: Batch) -> _Plan:
    """Validate ``batch`` against Vachana's limits (the dispatcher's checks, repeated
    defensively) and build the form."""
    limits = LIMITS
    if batch.task not in limits.tasks:
        raise PermanentError(f"vachana cannot {batch.task} audio", code="unsupported_task")
    if not batch.items:
        raise PermanentError("vachana: a job needs at least one file", code="empty_batch")
    if limits.max_files is not None and len(batch.items) > limits.max_files:
        raise PermanentError(
            f"vachana accepts at most max_files={limits.max_files} files per job, got {len(batch.items)}",
            code="limit_max_files",
        )
    for item in batch.items:
        _check_item(item, limits)
    total = sum(item.size for item in batch.items)
    if limits.max_batch_bytes is not None and total > limits.max_batch_bytes:
        raise PermanentError(
            f"vachana accepts at most max_batch_bytes={limits.max_batch_bytes} bytes per job, got {total}",
            code="limit_max_batch_bytes",
        )
    if batch.language not in (None, "", "auto") and batch.language not in LANGUAGES:
        raise PermanentError(f"vachana does not support language {batch.language!r}", code="unsupported_language")
    options = (
        batch.options
        if isinstance(batch.options, VachanaOptions)
        else VachanaOptions.model_validate(batch.options.model_dump())
    )
    try:
        fields = options.form_fields(batch.language)
    except ValueError as exc:
        raise PermanentError(f"vachana: {exc}", code="invalid_options") from exc
    return _Plan(fields, tuple(zip(batch.items, _unique_names(batch.items), strict=True)))


def _check_item(item: BatchItem, limits: Limits) -> None:
    if item.extension not in limits.formats:
        raise PermanentError(
            f"vachana does not accept .{item.extension} files ({item.name}); "
            f"formats: {', '.join(sorted(limits.formats))}",
            code="limit_formats",
        )
    if item.size == 0:
        raise PermanentError(f"{item.name} is empty; vachana refuses empty files", code="empty_file")
    if limits.max_file_bytes is not None and item.size > limits.max_file_bytes:
        raise PermanentError(
            f"{item.name} has {item.size} bytes; vachana accepts at most max_file_bytes={limits.max_file_bytes}",
            code="limit_max_file_bytes",
        )
    if limits.max_audio_seconds is not None and item.duration is not None and item.duration > limits.max_audio_seconds:
        raise PermanentError(
            f"{item.name} lasts {item.duration:.0f} s; vachana accepts files shorter than one hour "
            f"(max_audio_seconds={limits.max_audio_seconds:.0f})",
            code="limit_max_audio_seconds",
        )


def _unique_names(items: Sequence[BatchItem]) -> list[str]:
    """Form file names: the item's own, prefixed with its index where two would collide
    (results come back keyed by file name)."""
    names: list[str] = []
    taken: set[str] = set()
    for index, item in enumerate(items):
        name = item.name
        while name in taken:
            name = f"{index}_{name}"
        taken.add(name)
        names.append(name)
    return names
