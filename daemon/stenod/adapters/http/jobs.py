"""The job API, for programs that want stenod's own model of work.

``POST /v1/jobs`` takes the queue's request body (``path`` inputs under ``allowed_roots``,
``url`` inputs) or a multipart upload (``file``, and optionally ``request``: the same JSON
without ``inputs``); ``Idempotency-Key`` is the ``request_id``. Jobs are read, followed as
Server-Sent Events carrying the exchange's CloudEvents (from the start, or after
``Last-Event-ID``), their outputs downloaded, and cancelled with ``DELETE``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from pydantic import ValidationError

from stenod.adapters.http.context import Ctx, HttpContext, require_key
from stenod.adapters.http.errors import SERVER, ApiError
from stenod.adapters.http.retention import gone_message
from stenod.adapters.http.sse import Sse, event_stream
from stenod.adapters.http.uploads import receive, refuse_when_full, submit_upload
from stenod.errors import Rejected
from stenod.formats import render_json, render_srt, render_tsv, render_txt, render_vtt
from stenod.intake.request_intake import Accepted, Delivery, Retry
from stenod.intake.request_message import JobSpec
from stenod.jobs import JobView
from stenod.provider import Transcript

__all__ = ["OutputFormat", "job_events", "job_json", "job_output", "router"]

router = APIRouter(tags=["Jobs"], dependencies=[Depends(require_key)])

OutputFormat = Literal["txt", "json", "srt", "vtt", "tsv"]
_TERMINAL_TYPES = frozenset(f"stenod.job.{s}" for s in ("succeeded", "partial", "failed", "cancelled"))
_WAKE_SECONDS = 15.0
_RENDER = {"txt": render_txt, "srt": render_srt, "vtt": render_vtt, "tsv": render_tsv}
_MEDIA = {"txt": "text/plain", "srt": "application/x-subrip", "vtt": "text/vtt", "tsv": "text/tab-separated-values"}

_CREATE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/StenodRequest"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "request": {"type": "string", "description": "the request JSON without inputs"},
                    },
                }
            },
        },
    }
}


def job_json(view: JobView, *, transcripts: bool = True) -> dict[str, Any]:
    data = view.to_data(inline_transcript_bytes=1 << 30 if transcripts else 0)
    data.update(source=view.source, language=view.language, target_languages=list(view.target_languages))
    return data


async def _view(ctx: HttpContext, job_id: str) -> JobView:
    """The job; 404 for none, 410 for an upload's job past ``[http] keep_results_days``
    (still in the journal until the keeper's next sweep, or already removed)."""
    view = await ctx.journal.job(job_id)
    if view is None:
        if ctx.results.past_keeping(job_id, None):
            raise ApiError(410, gone_message(job_id, ctx.results.keep_days, None), code="job_expired")
        raise ApiError(404, f"no job {job_id}", code="unknown_job")
    if _an_upload(ctx, view) and view.state.terminal and ctx.results.past_keeping(job_id, view.updated_at):
        raise ApiError(410, gone_message(job_id, ctx.results.keep_days, view.updated_at), code="job_expired")
    return view


def _an_upload(ctx: HttpContext, view: JobView) -> bool:
    """A job of the HTTP server whose files are stenod's own (the results of an upload),
    or a voice command kept from the Wyoming listener (no files): kept as long."""
    roots = (str(ctx.results_dir) + "/", str(ctx.uploads_dir) + "/")
    own = all(o.startswith(roots) for item in view.items for o in item.outputs)
    return (view.source == "http" and own) or view.source == "wyoming"


def _accepted(outcome: Accepted | Rejected | Retry) -> Accepted:
    if isinstance(outcome, Rejected):
        raise ApiError(400, outcome.reason, code=outcome.code)
    if isinstance(outcome, Retry):
        raise ApiError(503, f"stenod could not record the job: {outcome.reason}", type=SERVER)
    return outcome


async def _created(ctx: HttpContext, accepted: Accepted) -> JSONResponse:
    view = await _view(ctx, accepted.job_id)
    return JSONResponse(
        job_json(view),
        status_code=202 if accepted.created else 200,
        headers={"Location": f"/v1/jobs/{accepted.job_id}"},
    )


@router.post(
    "/v1/jobs",
    summary="Create a job (the queue's request body, or an upload)",
    openapi_extra=_CREATE_BODY,
    status_code=202,
    responses={200: {"description": "the job this Idempotency-Key already created"}},
)
async def create(request: Request, ctx: Ctx) -> JSONResponse:
    key = request.headers.get("idempotency-key") or None
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind == "multipart/form-data":
        form = await receive(ctx, request, "file")
        try:
            raw = json.loads(form.value("request") or "{}")
            spec = JobSpec.model_validate({**raw, "request_id": raw.get("request_id") or key})
        except (ValueError, TypeError, ValidationError) as exc:
            await ctx.spool.discard(form.folder)
            raise ApiError(400, f"the request field is not a valid request: {exc}", param="request") from None
        accepted = await submit_upload(ctx, form, "file", spec)
    elif kind != "application/json":
        # No "simple request" (text/plain, a form) a page on another site can send gets here.
        raise ApiError(415, "the body must be application/json (the request) or multipart/form-data (an upload)")
    else:
        await refuse_when_full(ctx, None)  # its commit would wait for space: 507 now, nothing taken
        body = await request.body()  # the front door stops it at amqp.max_body_bytes while it is read
        outcome = await ctx.intake.handle(Delivery(body=body, message_id=key, source="http"))
        accepted = _accepted(outcome)
        if accepted.created:
            ctx.daemon.notify()
            if accepted.urls:
                ctx.daemon.wake_urls()
    return await _created(ctx, accepted)


@router.get("/v1/jobs", summary="Jobs, newest first")
async def list_jobs(
    ctx: Ctx,
    state: Literal["accepted", "submitted", "running", "succeeded", "partial", "failed", "cancelled"] | None = None,
    provider: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    views = await ctx.journal.jobs(state, limit, provider=provider, before=before)
    return {
        "jobs": [job_json(v, transcripts=False) for v in views],
        "next": views[-1].job_id if len(views) == limit else None,
    }


@router.get("/v1/jobs/{job_id}", summary="One job, with its transcripts once finished")
async def get_job(job_id: str, ctx: Ctx) -> dict[str, Any]:
    return job_json(await _view(ctx, job_id))


@router.delete("/v1/jobs/{job_id}", summary="Cancel a job", status_code=202)
async def cancel(job_id: str, ctx: Ctx) -> JSONResponse:
    await refuse_when_full(ctx, None, what="cancel")
    outcome = await ctx.intake.cancel(job_id)
    if isinstance(outcome, Rejected):
        raise ApiError(404, outcome.reason, code=outcome.code)
    accepted = _accepted(outcome)
    return JSONResponse(job_json(await _view(ctx, accepted.job_id)), status_code=202)


async def _events(ctx: HttpContext, job_id: str, after: int) -> AsyncIterator[Sse | None]:
    while True:
        ticket = ctx.watch.ticket(job_id)
        rows = await ctx.journal.events(job_id, after=after)
        for seq, body in rows:
            after = seq
            event = json.loads(body)
            yield Sse(body, event=event["type"], id=event["id"])
            if event["type"] in _TERMINAL_TYPES:
                return
        if ctx.stopping.is_set():
            return
        if not rows and not await ctx.watch.wait(ticket, _WAKE_SECONDS):
            yield None


@router.get(
    "/v1/jobs/{job_id}/events",
    summary="The job's CloudEvents as Server-Sent Events, until it ends",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}},
        204: {"description": "The job has ended and no event follows Last-Event-ID (an EventSource stops)"},
    },
)
async def events(
    job_id: str,
    ctx: Ctx,
    last_event_id: Annotated[str | None, Header(max_length=64)] = None,
) -> Response:
    return await job_events(ctx, job_id, last_event_id)


async def job_events(ctx: HttpContext, job_id: str, last_event_id: str | None) -> Response:
    """The job's CloudEvents as Server-Sent Events, after ``last_event_id`` if given (the API's
    stream and the page's)."""
    view = await _view(ctx, job_id)
    after = 0
    if last_event_id:
        seq = await ctx.journal.event_seq(job_id, last_event_id)
        if seq is None:
            raise ApiError(400, f"Last-Event-ID {last_event_id} is not an event of job {job_id}", param="Last-Event-ID")
        after = seq
        if view.state.terminal and not await ctx.journal.events(job_id, after=after, limit=1):
            # A browser's EventSource reconnects after the stream ends; 204 tells it there is no more.
            return Response(status_code=204)
    return event_stream(_events(ctx, job_id, after))


@router.get(
    "/v1/jobs/{job_id}/outputs/{format}",
    summary="A finished item's output file",
    response_class=Response,
    responses={
        200: {
            "content": {
                media: {"schema": {"type": "string"}}
                for media in (
                    "text/plain",
                    "application/json",
                    "application/x-subrip",
                    "text/vtt",
                    "text/tab-separated-values",
                )
            }
        }
    },
)
async def output(
    job_id: str,
    format: OutputFormat,
    ctx: Ctx,
    item: Annotated[int, Query(ge=0, le=99)] = 0,
) -> Response:
    return await job_output(ctx, job_id, format, item)


async def job_output(ctx: HttpContext, job_id: str, format: str, item: int) -> Response:
    """A finished item's output in ``format`` (the API's download and the page's)."""
    view = await _view(ctx, job_id)
    if item >= len(view.items):
        raise ApiError(404, f"job {job_id} has {len(view.items)} item(s)", param="item")
    entry = view.items[item]
    path = next((Path(o) for o in entry.outputs if o.endswith(f".{format}") and not o.endswith(".error.json")), None)
    if path is not None and path.is_file():
        return FileResponse(path, filename=path.name)
    if entry.transcript is None:
        state = "has not finished" if not view.state.terminal else "has no transcript"
        raise ApiError(404, f"item {item} of job {job_id} {state}", code="no_output")
    transcript = Transcript.from_json(entry.transcript)
    if format == "json":
        return Response(render_json(transcript, source=entry.input), media_type="application/json")
    return Response(_RENDER[format](transcript), media_type=_MEDIA[format])
