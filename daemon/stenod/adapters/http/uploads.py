"""An uploaded file becomes a job, and a synchronous call waits for that job's result.

Every HTTP job is a journaled job like any other: the file is spooled, the job committed,
then worked on by the dispatcher. A client that goes away does not cancel it; its result
stays retrievable from the job API. What the routes do with the result (OpenAI's shapes,
whisper-asr-webservice's) is theirs.
"""

from __future__ import annotations

import asyncio
import errno
import time
from pathlib import Path

from starlette.requests import ClientDisconnect, Request

from stenod.adapters.http.context import HttpContext
from stenod.adapters.http.errors import SERVER, ApiError, for_failure
from stenod.adapters.http.spool import BadUpload, SpooledFile, SpooledForm, UploadTooLarge
from stenod.errors import Rejected
from stenod.intake.request_intake import Accepted, Retry, Upload
from stenod.intake.request_message import JobSpec
from stenod.jobs import JobState, JobView
from stenod.provider import Transcript
from stenod.speakers import KnownSpeaker

__all__ = [
    "keep_uploads",
    "receive",
    "refuse_when_full",
    "submit_upload",
    "transcript_of",
    "upload_of",
    "wait_finished",
]

_WAKE_SECONDS = 5.0  # a waiting call re-checks the job (and shutdown) at least this often


async def receive(ctx: HttpContext, request: Request, field: str, *, raw_pcm: bool = False) -> SpooledForm:
    """Spool the multipart body; raises ApiError (400, 413) for an unusable one, 507 when
    the state directory's filesystem has no room for it."""
    await refuse_when_full(ctx)
    try:
        form = await ctx.spool.receive(request, file_fields=frozenset({field}), raw_pcm=raw_pcm)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise _no_room(field) from exc
    except UploadTooLarge as exc:
        raise ApiError(413, str(exc), param=field, code="upload_too_large") from exc
    except BadUpload as exc:
        raise ApiError(400, exc.message, param=exc.param or field) from exc
    except ClientDisconnect:
        raise
    if not any(f.field == field for f in form.files):
        await ctx.spool.discard(form.folder)
        raise ApiError(400, f"the form has no file in its {field!r} field", param=field)
    return form


async def refuse_when_full(ctx: HttpContext, field: str | None = "file", *, what: str | None = None) -> None:
    """507 before a byte is read when the state directory's filesystem (the spooled file, the
    journal and the results go there) or the journal's database has no room: a job taken, or
    a change (a cancel, a speaker's name, a correction) made now would wait for its commit
    instead of being answered. ``what``: the request's thing, for the message."""
    if (full := await asyncio.to_thread(ctx.daemon.state_full)) is not None:
        raise _no_room(field, full, what)


def _no_room(field: str | None, full: str = "its state directory's filesystem", what: str | None = None) -> ApiError:
    what = what or ("upload" if field else "job")
    return ApiError(
        507,
        f"stenod's disk is full ({full}): no room to take this {what}. Nothing was kept; send it again "
        "once space is freed (GET /healthz names what is full)",
        type=SERVER,
        code="insufficient_storage",
        param=field,
        headers={"Retry-After": "300"},
    )


def upload_of(form: SpooledForm, field: str) -> SpooledFile:
    return next(f for f in form.files if f.field == field)


async def submit_upload(
    ctx: HttpContext, form: SpooledForm, field: str, spec: JobSpec, known: tuple[KnownSpeaker, ...] = ()
) -> Accepted:
    """Commit a job for the form's file (``known``: voices to label by name, their clips
    spooled beside it); the spool is dropped if no job keeps it."""
    spooled = upload_of(form, field)
    try:
        await _known_format(ctx, spooled, field)
        outcome = await ctx.intake.accept_upload(
            spec,
            Upload(spooled.name, str(spooled.path), spooled.size, spooled.device, spooled.inode, spooled.sha256),
            output_dir=str(ctx.results_dir / form.folder.name),
            known=known,
        )
    except BaseException:
        await ctx.spool.discard(form.folder)
        raise
    if isinstance(outcome, Rejected):
        await ctx.spool.discard(form.folder)
        raise ApiError(400, outcome.reason, code=outcome.code, param=_param_of(outcome.code))
    if isinstance(outcome, Retry):
        await ctx.spool.discard(form.folder)
        raise ApiError(503, f"stenod could not record the job: {outcome.reason}", type=SERVER)
    if outcome.created:
        ctx.daemon.notify()
    else:  # the same Idempotency-Key again: the first upload's job answers
        await ctx.spool.discard(form.folder)
    return outcome


def _param_of(code: str) -> str | None:
    return {
        "unsupported_format": "file",
        "unknown_provider": "model",
        "provider_unavailable": "model",
        "unsupported_language": "language",
        "invalid_options": "model",
        "unsupported_task": "model",
        "diarization_unavailable": "model",
    }.get(code)


async def _known_format(ctx: HttpContext, spooled: SpooledFile, field: str) -> None:
    """Give a file without a usable extension (Bazarr's ``audio_file``) the one its content
    has; refuse at once what is not audio at all."""
    extension = spooled.path.suffix.lower().lstrip(".")
    if extension:
        return
    found = await asyncio.to_thread(ctx.daemon.probe_format, spooled.path)
    if found is None:
        raise ApiError(
            400,
            f"{spooled.original or spooled.name} is not a recognisable audio file (no audio stream libav can read)",
            param=field,
            code="not_audio",
        )
    target = spooled.path.with_name(f"{spooled.path.stem}.{found}")
    await asyncio.to_thread(spooled.path.rename, target)
    spooled.path = target
    if not Path(spooled.name).suffix:
        spooled.name = f"{spooled.name}.{found}"


async def wait_finished(ctx: HttpContext, job_id: str) -> JobView:
    """The job once it reached a final state. Raises ApiError 503 when stenod is stopping
    (the job goes on after the restart) and 504 when it takes longer than the sync timeout."""
    deadline = time.monotonic() + ctx.sync_timeout_seconds
    while True:
        ticket = ctx.watch.ticket(job_id)  # before the read: a change right after it still wakes us
        view = await ctx.journal.job(job_id)
        if view is None:
            raise ApiError(404, f"no job {job_id}", code="unknown_job")
        if view.state.terminal:
            return view
        left = deadline - time.monotonic()
        if ctx.stopping.is_set() or left <= 0:
            status, why = (503, "stenod is stopping") if ctx.stopping.is_set() else (504, "the job takes longer")
            raise ApiError(
                status,
                f"{why}; job {job_id} goes on and its result will be at /v1/jobs/{job_id}",
                type=SERVER,
                code="job_still_running",
                headers={"Retry-After": "30", "Location": f"/v1/jobs/{job_id}"},
            )
        await ctx.watch.wait(ticket, min(left, _WAKE_SECONDS))


def transcript_of(view: JobView, spooled: SpooledFile | None = None) -> Transcript:
    """The transcript of a finished one-file job; ApiError for a job that has none (its
    message names the client's file, never the spool's path)."""
    item = view.items[0] if view.items else None
    if view.state == JobState.SUCCEEDED and item is not None and item.transcript is not None:
        return Transcript.from_json(item.transcript)
    error = (item.error if item is not None else None) or view.error
    failure = for_failure(error, cancelled=view.state == JobState.CANCELLED)
    if spooled is not None:
        failure.message = failure.message.replace(str(spooled.path), spooled.name)
    raise failure


async def keep_uploads(ctx: HttpContext, form: SpooledForm, spec: JobSpec) -> list[str]:
    """Files uploaded on the page: kept under ``<state_dir>/uploads/<id>/`` as the jobs' inputs
    (the transcript view plays them), outputs beside them. One job per file."""
    folder = ctx.uploads_dir / form.folder.name
    await asyncio.to_thread(ctx.uploads_dir.mkdir, parents=True, exist_ok=True)
    await asyncio.to_thread(form.folder.rename, folder)
    accepted: list[str] = []
    for spooled in form.files:
        spooled.path = folder / spooled.path.name
        await _known_format(ctx, spooled, "file")
        outcome = await ctx.intake.accept_upload(
            spec,
            Upload(spooled.name, str(spooled.path), spooled.size, spooled.device, spooled.inode, spooled.sha256),
            output_dir=str(folder),
            keep=True,
        )
        if isinstance(outcome, Rejected):
            raise ApiError(400, outcome.reason, code=outcome.code, param=_param_of(outcome.code))
        if isinstance(outcome, Retry):
            raise ApiError(503, f"stenod could not record the job: {outcome.reason}", type=SERVER)
        accepted.append(outcome.job_id)
    ctx.daemon.notify()
    return accepted
