"""A transcript on the page: its segments beside the recording (played from the folders
stenod may read for people), and the corrections made to it."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from stenod.adapters.http.context import Ctx, HttpContext
from stenod.adapters.http.errors import ApiError
from stenod.adapters.http.page.render import page
from stenod.adapters.http.page.session import changing_form, signed_in
from stenod.adapters.http.page.speakers import speaker_list
from stenod.errors import CorrectionError

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


_PLAYABLE = frozenset(
    {"wav", "flac", "ogg", "oga", "opus", "mp3", "m4a", "aac", "mp4", "webm", "mka", "mkv", "mov", "aiff", "aif"}
)


def _audio_allowed(ctx: HttpContext, path: str | None) -> Path | None:
    """The recording, if it is one a browser can play and it still lies under a folder stenod
    may read for people."""
    if not path or Path(path).suffix.lower().lstrip(".") not in _PLAYABLE:
        return None
    real = Path(os.path.realpath(path))
    roots = [Path(os.path.realpath(r)) for r in [ctx.uploads_dir, *ctx.daemon.audio_roots()]]
    if not any(real.is_relative_to(root) for root in roots) or not real.is_file():
        return None
    return real


@router.get("/jobs/{job_id}/items/{index}")
async def transcript(request: Request, job_id: str, index: int, ctx: Ctx) -> Response:
    signed_in(request, ctx)
    item = await ctx.journal.editable_item(job_id, index)
    view = await ctx.journal.job(job_id)
    if item is None or view is None or item.current is None:
        raise ApiError(404, f"job {job_id} has no transcript for item {index}", code="no_transcript")
    current = dict(item.current)
    segments = current.get("segments") or []
    speakers = speaker_list(current)
    return page(
        request, ctx, "transcript.html", nav="jobs", job={"job_id": job_id}, item={"input": item.input},
        transcript=current, segments=segments, speakers=speakers, edited=item.edited is not None,
        colour={s["label"]: s["colour"] for s in speakers}, remember_voices=ctx.naming.remember_voices,
        audio=await asyncio.to_thread(_audio_allowed, ctx, item.path), base=f"/jobs/{job_id}/items/{index}",
    )  # fmt: skip


@router.get("/jobs/{job_id}/items/{index}/audio")
async def audio(request: Request, job_id: str, index: int, ctx: Ctx) -> Response:
    signed_in(request, ctx)
    item = await ctx.journal.editable_item(job_id, index)
    path = await asyncio.to_thread(_audio_allowed, ctx, item.path if item else None)
    if path is None:
        raise ApiError(404, "the recording is not in a folder stenod may serve", code="no_audio")
    return FileResponse(path)  # answers Range requests: the player seeks without downloading it all


async def _correct(request: Request, ctx: HttpContext, job_id: str, index: int, change: Any) -> Response:
    try:
        await change
    except CorrectionError as exc:
        raise ApiError(400, str(exc), code="invalid_correction") from exc
    return RedirectResponse(f"/jobs/{job_id}/items/{index}", status_code=303)


@router.post("/jobs/{job_id}/items/{index}/segments/{segment}")
async def edit_segment(request: Request, job_id: str, index: int, segment: int, ctx: Ctx) -> Response:
    form = await changing_form(request, ctx)
    change = ctx.corrections.edit_segment(job_id, index, segment, form.get("text", ""))
    return await _correct(request, ctx, job_id, index, change)


@router.post("/jobs/{job_id}/items/{index}/revert")
async def revert(request: Request, job_id: str, index: int, ctx: Ctx) -> Response:
    await changing_form(request, ctx)
    return await _correct(request, ctx, job_id, index, ctx.corrections.revert(job_id, index))
