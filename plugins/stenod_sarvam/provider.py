"""The Sarvam AI batch speech-to-text provider (STT and STT-translate jobs).

The job flow is initiate → upload-files → PUT each file to its presigned URL → start →
status … → download-files → GET each result. ``submit`` checkpoints after every remote
side effect, so a restart continues the same Sarvam job. Residual risk: a crash between
Sarvam creating a job and the first checkpoint leaves one empty, never-started job
behind (Sarvam has no idempotency key and no job listing); it is not billed and a new
job is created on the next attempt.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel

from stenod.provider import (
    Batch,
    BatchItem,
    Diarization,
    ErrorInfo,
    Handle,
    ItemResult,
    Json,
    Limits,
    PermanentError,
    ProviderSettings,
    RemoteState,
    RetryableError,
    Status,
    StepContext,
    Task,
)

from .api import JobStatus, SarvamApi, TaskDetail
from .options import LIMITS, MAX_SPEAKERS, STT_LANGUAGES, SarvamOptions, SarvamSettings
from .results import detail_by_input, file_error, remote_state, status_of, transcript_of

_CHECKPOINT_VERSION = 1
_CACHE_JOBS = 256


class _Checkpoints:
    """The submit checkpoint: the last one saved, updated and committed one change at a time."""

    def __init__(self, ctx: StepContext) -> None:
        self._ctx = ctx
        self._data: dict[str, Any] = dict(ctx.saved or {})

    def get(self, key: str) -> Any:
        return self._data.get(key)

    async def commit(self, **changes: Json) -> None:
        self._data = {**self._data, **changes}
        await self._ctx.checkpoint(self._data)


@dataclass(frozen=True, slots=True)
class _Plan:
    """What ``submit`` sends for a batch: endpoint, parameters, and a unique upload name per item."""

    prefix: str
    parameters: dict[str, Json]
    files: tuple[tuple[BatchItem, str], ...]


class SarvamProvider:
    """Sarvam AI batch jobs. One instance serves every job of the daemon."""

    name: ClassVar[str] = "sarvam"
    Settings: ClassVar[type[ProviderSettings]] = SarvamSettings
    Options: ClassVar[type[BaseModel]] = SarvamOptions
    limits: Limits = LIMITS

    def __init__(self, settings: SarvamSettings, http: httpx.AsyncClient) -> None:
        self._api = SarvamApi(http, settings)
        # The status that showed a job finished, kept for fetch so it needs no extra status call.
        self._finished: OrderedDict[str, JobStatus] = OrderedDict()

    async def submit(self, batch: Batch, ctx: StepContext) -> Handle:
        """Create, fill and start a Sarvam job, or continue the one in ``ctx.saved``.

        Raises PermanentError (a limit or option the batch breaks, named), AuthError, or
        RetryableError (network, 429, 5xx, an expired upload URL: URLs are requested
        afresh on every attempt and never stored).
        """
        plan = _plan(batch)
        saved = _Checkpoints(ctx)
        if saved.get("job_id") is None:
            job_id = await self._api.create_job(plan.prefix, plan.parameters)
            await saved.commit(v=_CHECKPOINT_VERSION, prefix=plan.prefix, job_id=job_id, uploaded=[], started=False)
        elif not saved.get("started") and await self._was_started(saved):
            # The crash came after start reached Sarvam but before its checkpoint.
            await saved.commit(started=True)
        if not saved.get("started"):
            await self._upload(plan, saved, ctx)
            await self._start(saved)
        return _handle(batch, plan, saved.get("prefix"), saved.get("job_id"))

    async def _upload(self, plan: _Plan, saved: _Checkpoints, ctx: StepContext) -> None:
        todo = [(item, name) for item, name in plan.files if name not in saved.get("uploaded")]
        if not todo:
            return
        urls = await self._api.upload_urls(saved.get("prefix"), saved.get("job_id"), [name for _, name in todo])
        total = sum(item.size for item, _ in todo) or 1
        done = 0

        def sent(n: int) -> None:
            nonlocal done
            done += n
            ctx.progress(min(1.0, done / total))

        for item, name in todo:
            await self._api.put_blob(urls[name], item, name, sent)
            await saved.commit(uploaded=[*saved.get("uploaded"), name])

    async def _start(self, saved: _Checkpoints) -> None:
        try:
            await self._api.start(saved.get("prefix"), saved.get("job_id"))
        except PermanentError:
            # A start whose answer was lost makes the retried start a refusal: check first.
            if not await self._was_started(saved):
                raise
        await saved.commit(started=True)

    async def _was_started(self, saved: _Checkpoints) -> bool:
        job = await self._api.status(saved.get("prefix"), saved.get("job_id"))
        return job.job_state.strip().lower() != "accepted"

    async def poll(self, handle: Handle) -> Status:
        """The job's state, progress from its file counts, and per-file outcomes once done."""
        job = await self._api.status(handle["prefix"], handle["job_id"])
        if remote_state(job) is RemoteState.DONE:
            self._finished[job.job_id] = job
            self._finished.move_to_end(job.job_id)
            while len(self._finished) > _CACHE_JOBS:
                self._finished.popitem(last=False)
        return status_of(job, [(f[0], f[1]) for f in handle["files"]])

    async def fetch(self, handle: Handle) -> Sequence[ItemResult]:
        """Download every successful file's result; failed files get their own error.

        Idempotent (download URLs are requested afresh each time). Raises RetryableError
        for a download that fails or is cut short.
        """
        prefix, job_id = handle["prefix"], handle["job_id"]
        job = self._finished.get(job_id) or await self._api.status(prefix, job_id)
        if remote_state(job) is not RemoteState.DONE:
            raise RetryableError(f"sarvam job {job_id} is {job.job_state}, not finished yet", code="not_finished")
        details = detail_by_input(job)
        results: dict[str, ItemResult] = {}
        wanted: list[tuple[str, str, TaskDetail, float | None]] = []
        for item_id, name, duration in handle["files"]:
            detail = details.get(name)
            error = file_error(name, detail)
            if error is not None or detail is None:
                results[item_id] = ItemResult(item_id, error=error)
            else:
                wanted.append((item_id, name, detail, duration))
        outputs = sorted({d.outputs[0].file_name for _, _, d, _ in wanted if d.outputs})
        urls = await self._api.download_urls(prefix, job_id, outputs) if outputs else {}
        for item_id, name, detail, duration in wanted:
            results[item_id] = await self._result(urls, item_id, name, detail, duration, handle)
        self._finished.pop(job_id, None)
        return [results[f[0]] for f in handle["files"]]

    async def _result(
        self,
        urls: dict[str, str],
        item_id: str,
        name: str,
        detail: TaskDetail,
        duration: float | None,
        handle: Handle,
    ) -> ItemResult:
        output = detail.outputs[0].file_name if detail.outputs else ""
        raw = await self._api.get_blob(urls[output], output)
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise RetryableError(
                f"sarvam result {output} for {name} is not valid JSON (cut short?)", code="malformed_response"
            ) from exc
        try:
            transcript = transcript_of(
                data, job_id=handle["job_id"], language=handle.get("language"), duration=duration
            )
        except ValueError as exc:
            error = ErrorInfo(code="sarvam_bad_result", message=f"sarvam's result for {name} is unreadable: {exc}")
            return ItemResult(item_id, error=error)
        return ItemResult(item_id, transcript=transcript)

    async def cancel(self, handle: Handle) -> None:
        """Sarvam's batch API has no cancel endpoint: the remote job runs to its end."""
        self._finished.pop(handle["job_id"], None)


def _handle(batch: Batch, plan: _Plan, prefix: str, job_id: str) -> dict[str, Json]:
    return {
        "prefix": prefix,
        "job_id": job_id,
        "language": batch.language,
        "files": [[item.item_id, name, item.duration] for item, name in plan.files],
    }


def _plan(batch: Batch) -> _Plan:
    """Validate ``batch`` against Sarvam's limits and build the request.

    The dispatcher enforces ``limits`` before calling submit; this is the defensive second check.
    """
    limits = LIMITS
    if batch.task not in limits.tasks:
        raise PermanentError(f"sarvam cannot {batch.task} audio", code="unsupported_task")
    if not batch.items:
        raise PermanentError("sarvam: a job needs at least one file", code="empty_batch")
    if limits.max_files is not None and len(batch.items) > limits.max_files:
        raise PermanentError(
            f"sarvam accepts at most max_files={limits.max_files} files per job, got {len(batch.items)}",
            code="limit_max_files",
        )
    options = (
        batch.options
        if isinstance(batch.options, SarvamOptions)
        else SarvamOptions.model_validate(batch.options.model_dump())
    )
    if batch.diarization is not None:
        options = _diarizing(options, batch.diarization)
    for item in batch.items:
        _check_item(item, limits, options)
    if batch.task is Task.TRANSLATE:
        foreign = [t for t in batch.target_languages if t.lower().split("-")[0] != "en"]
        if foreign:
            raise PermanentError(
                f"sarvam translates speech only into English, not {', '.join(foreign)}",
                code="unsupported_language",
            )
    elif batch.language not in (None, "", "auto") and batch.language not in STT_LANGUAGES:
        raise PermanentError(f"sarvam does not support language {batch.language!r}", code="unsupported_language")
    try:
        prefix, parameters = options.job_parameters(batch.task, batch.language)
    except ValueError as exc:
        raise PermanentError(f"sarvam: {exc}", code="invalid_options") from exc
    return _Plan(prefix, parameters, tuple(zip(batch.items, _unique_names(batch.items), strict=True)))


def _diarizing(options: SarvamOptions, asked: Diarization) -> SarvamOptions:
    """The options with Sarvam's own diarization on; its ``num_speakers`` is the most it
    separates, so a range gives its upper end."""
    count = asked.num_speakers or asked.max_speakers or options.num_speakers
    if count is not None and count > MAX_SPEAKERS:
        raise PermanentError(f"sarvam separates at most {MAX_SPEAKERS} speakers, not {count}", code="invalid_options")
    return options.model_copy(update={"with_diarization": True, "num_speakers": count})


def _check_item(item: BatchItem, limits: Limits, options: SarvamOptions) -> None:
    if item.extension not in limits.formats:
        raise PermanentError(
            f"sarvam does not accept .{item.extension} files ({item.name}); "
            f"formats: {', '.join(sorted(limits.formats))}",
            code="limit_formats",
        )
    if item.extension == "pcm" and not (options.input_audio_codec or "").startswith("pcm"):
        raise PermanentError(
            f"{item.name}: raw PCM needs options.input_audio_codec (pcm_s16le, pcm_l16 or pcm_raw)",
            code="invalid_options",
        )
    if limits.max_audio_seconds is not None and item.duration is not None and item.duration > limits.max_audio_seconds:
        raise PermanentError(
            f"{item.name} lasts {item.duration:.0f} s; sarvam accepts at most "
            f"max_audio_seconds={limits.max_audio_seconds:.0f} per file",
            code="limit_max_audio_seconds",
        )


def _unique_names(items: Sequence[BatchItem]) -> list[str]:
    """Upload names: the item's own name, prefixed with its index where two would collide
    (Sarvam keys uploads and results by file name)."""
    names: list[str] = []
    taken: set[str] = set()
    for index, item in enumerate(items):
        name = item.name
        while name in taken:
            name = f"{index}_{name}"
        taken.add(name)
        names.append(name)
    return names
