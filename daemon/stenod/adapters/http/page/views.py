"""The page's views: the jobs, one job, uploads, status (a transcript: transcripts.py).

Server-rendered HTML that reads well without JavaScript; ``page.js`` adds live updates
(the ``/ui/…`` fragments and event streams), seeking, search and dropping files. Every
action is a form that the core carries out: cancel and retry through request intake,
corrections through :class:`stenod.corrections.Corrections` (speakers: :mod:`.speakers`).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from stenod.adapters.http.context import Ctx, HttpContext
from stenod.adapters.http.errors import ApiError
from stenod.adapters.http.jobs import OutputFormat, job_events, job_output
from stenod.adapters.http.page.render import STATIC, age, fragment, page
from stenod.adapters.http.page.session import changing_form, check_form, signed_in
from stenod.adapters.http.page.system import system_values
from stenod.adapters.http.sse import Sse, event_stream
from stenod.adapters.http.uploads import keep_uploads, receive
from stenod.errors import Rejected
from stenod.intake.request_intake import Accepted
from stenod.intake.request_message import JobSpec
from stenod.jobs import JobView

__all__ = ["router", "static"]

router = APIRouter(include_in_schema=False)
static = StaticFiles(directory=STATIC)

STATES = ("accepted", "submitted", "running", "succeeded", "partial", "failed", "cancelled")
FORMATS = ("txt", "json", "srt", "vtt")
_PAGE = 50
_THROTTLE_SECONDS = 1.0


def _row(view: JobView) -> dict[str, Any]:
    first = view.items[0].input if view.items else "(no input)"
    return {
        "job_id": view.job_id,
        "name": os.path.basename(first.rstrip("/")) or first,
        "more": max(0, len(view.items) - 1),
        "state": str(view.state),
        "provider": view.provider,
        "source": view.source,
        "created_at": view.created_at,
        "age": age(view.created_at),
        "progress": view.progress,
    }


async def _rows(ctx: HttpContext, state: str | None, provider: str | None, before: str | None) -> dict[str, Any]:
    views = await ctx.journal.jobs(state or None, _PAGE, provider=provider or None, before=before or None)
    query = {k: v for k, v in (("state", state), ("provider", provider)) if v}
    more = urlencode({**query, "before": views[-1].job_id}) if len(views) == _PAGE else None
    return {"jobs": [_row(v) for v in views], "filtered": bool(query), "next": more, "query": urlencode(query)}


def _providers(ctx: HttpContext) -> list[str]:
    names, unavailable = ctx.daemon.providers()
    return sorted(set(names) | set(unavailable))


@router.get("/")
async def jobs(
    request: Request,
    ctx: Ctx,
    state: Annotated[str | None, Query(max_length=20)] = None,
    provider: Annotated[str | None, Query(max_length=64)] = None,
    before: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    signed_in(request, ctx)
    listing = await _rows(ctx, state, provider, before)
    return page(
        request, ctx, "jobs.html", nav="jobs", states=STATES, providers=_providers(ctx), state=state,
        provider=provider, **listing,
    )  # fmt: skip


@router.get("/ui/jobs/rows")
async def job_rows(
    request: Request,
    ctx: Ctx,
    state: Annotated[str | None, Query(max_length=20)] = None,
    provider: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    signed_in(request, ctx)
    return fragment("_jobs_rows.html", **await _rows(ctx, state, provider, None))


async def _changes(ctx: HttpContext) -> AsyncIterator[Sse | None]:
    """A ``change`` event whenever any job changes, at most one a second."""
    while not ctx.stopping.is_set():
        ticket = ctx.watch.ticket()
        if await ctx.watch.wait(ticket, 15.0):
            yield Sse("{}", event="change")
            await asyncio.sleep(_THROTTLE_SECONDS)
        else:
            yield None


@router.get("/ui/events")
async def changes(request: Request, ctx: Ctx) -> Response:
    signed_in(request, ctx)
    return event_stream(_changes(ctx))


async def _job_values(ctx: HttpContext, job_id: str) -> dict[str, Any]:
    view = await ctx.journal.job(job_id)
    if view is None:
        raise ApiError(404, f"no job {job_id}", code="unknown_job")
    events = []
    for _, body in await ctx.journal.events(job_id, limit=1000):
        event = json.loads(body)
        kind = event["type"].rsplit(".", 1)[-1]
        progress = event["data"].get("progress") if kind == "progress" else None
        events.append({"time": event["time"], "kind": kind, "progress": progress})
    data = view.to_data(inline_transcript_bytes=0)
    items = [
        {
            "index": item.index,
            "input": item.input,
            "state": str(item.state),
            "error": item.error,
            "transcript": item.transcript is not None,
            "formats": [f for f in FORMATS if any(o.endswith(f".{f}") for o in item.outputs)]
            or (list(FORMATS) if item.transcript is not None else []),
        }
        for item in view.items
    ]
    links = await ctx.journal.retry_links(job_id)
    return {
        "job": {**data, "source": view.source, "language": view.language, "error": view.error},
        "items": items,
        "events": events,
        "terminal": view.state.terminal,
        "retry_of": links[0],
        "retries": links[1],
    }


@router.get("/jobs/{job_id}")
async def job(request: Request, job_id: str, ctx: Ctx) -> Response:
    signed_in(request, ctx)
    return page(request, ctx, "job.html", nav="jobs", **await _job_values(ctx, job_id))


@router.get("/ui/jobs/{job_id}/events")
async def job_changes(
    request: Request, job_id: str, ctx: Ctx, last_event_id: Annotated[str | None, Header(max_length=64)] = None
) -> Response:
    """The job's events for its page (the API's stream takes a key, never the page's cookie)."""
    signed_in(request, ctx)
    return await job_events(ctx, job_id, last_event_id)


@router.get("/jobs/{job_id}/outputs/{format}")
async def output(
    request: Request, job_id: str, format: OutputFormat, ctx: Ctx, item: Annotated[int, Query(ge=0, le=99)] = 0
) -> Response:
    """An output to download from the job's page (the API's download takes a key, never the cookie)."""
    signed_in(request, ctx)
    return await job_output(ctx, job_id, format, item)


@router.get("/ui/jobs/{job_id}/body")
async def job_body(request: Request, job_id: str, ctx: Ctx) -> Response:
    signed_in(request, ctx)
    return fragment("_job_body.html", **await _job_values(ctx, job_id))


@router.post("/jobs/{job_id}/cancel")
async def cancel(request: Request, job_id: str, ctx: Ctx) -> Response:
    await changing_form(request, ctx)
    outcome = await ctx.intake.cancel(job_id)
    if isinstance(outcome, Rejected):
        raise ApiError(404, outcome.reason, code=outcome.code)
    ctx.daemon.notify()
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


@router.post("/jobs/{job_id}/retry")
async def retry(request: Request, job_id: str, ctx: Ctx) -> Response:
    await changing_form(request, ctx)
    outcome = await ctx.intake.retry(job_id)
    if not isinstance(outcome, Accepted):
        reason = outcome.reason if isinstance(outcome, Rejected) else "stenod could not record the job"
        view = await _job_values(ctx, job_id)
        return page(request, ctx, "job.html", status=409, nav="jobs", flash=reason, flash_kind="error", **view)
    ctx.daemon.notify()
    if outcome.urls:
        ctx.daemon.wake_urls()
    return RedirectResponse(f"/jobs/{outcome.job_id}", status_code=303)


@router.get("/upload")
async def upload_form(request: Request, ctx: Ctx) -> Response:
    signed_in(request, ctx)
    names, _ = ctx.daemon.providers()
    return page(
        request, ctx, "upload.html", nav="upload", providers=sorted(names),
        default_provider=ctx.intake.default_provider, formats=FORMATS,
    )  # fmt: skip


@router.post("/upload")
async def upload(request: Request, ctx: Ctx) -> Response:
    signed_in(request, ctx)
    form = await receive(ctx, request, "file")  # as the APIs take uploads: 413, 400, 507 alike
    try:
        check_form(request, ctx, form.value("csrf"))
        spec = JobSpec.model_validate(
            {
                "provider": form.value("provider") or None,
                "language": form.value("language") or None,
                "diarize": form.value("diarize") == "1",
                "output": {"formats": [f for f in form.fields.get("formats", []) if f in FORMATS] or list(FORMATS)},
            }
        )
    except (PermissionError, ValueError):
        await ctx.spool.discard(form.folder)
        raise
    accepted = await keep_uploads(ctx, form, spec)
    target = f"/jobs/{accepted[0]}" if len(accepted) == 1 else "/"
    return RedirectResponse(target, status_code=303)


@router.get("/system")
async def system(request: Request, ctx: Ctx) -> Response:
    signed_in(request, ctx)
    return page(request, ctx, "system.html", nav="system", **await system_values(ctx))
