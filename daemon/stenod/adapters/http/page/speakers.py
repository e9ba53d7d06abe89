"""The page's speakers: each voice of a transcript in its own colour, named for this
recording only or for good, and the Speakers view of the voices stenod remembers (rename,
merge, forget)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from stenod.adapters.http.context import Ctx
from stenod.adapters.http.errors import ApiError
from stenod.adapters.http.page.render import page
from stenod.adapters.http.page.session import changing_form, signed_in
from stenod.errors import CorrectionError, NameTaken
from stenod.who_spoke.voices import check_name

__all__ = ["router", "speaker_list"]

router = APIRouter(include_in_schema=False)
COLOURS = 8  # page.css has as many speaker colours; more voices than that share them in turn


def speaker_list(transcript: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The voices of a transcript (JSON) in order of first appearance: label, the name it
    matched and how closely, and its colour."""
    listed = {s["label"]: s for s in transcript.get("speakers") or ()}
    labels = dict.fromkeys([s["speaker"] for s in transcript.get("segments") or () if s.get("speaker")] + list(listed))
    return [
        {
            "label": label,
            "name": (listed.get(label) or {}).get("name"),
            "similarity": (listed.get(label) or {}).get("similarity"),
            "colour": index % COLOURS,
        }
        for index, label in enumerate(labels)
    ]


@router.post("/jobs/{job_id}/items/{index}/speaker")
async def name_speaker(request: Request, job_id: str, index: int, ctx: Ctx) -> Response:
    form = await changing_form(request, ctx)
    try:
        await ctx.naming.name(
            job_id, index, form.get("old", ""), form.get("new", ""), for_good=form.get("remember") == "1"
        )
    except CorrectionError as exc:
        raise ApiError(400, str(exc), code="invalid_correction") from exc
    return RedirectResponse(f"/jobs/{job_id}/items/{index}", status_code=303)


@router.get("/speakers")
async def speakers(request: Request, ctx: Ctx) -> Response:
    signed_in(request, ctx)
    voices = await ctx.journal.voices()
    return page(
        request, ctx, "speakers.html", nav="speakers", voices=voices, remember_voices=ctx.naming.remember_voices
    )


@router.post("/speakers/{name}/rename")
async def rename(request: Request, name: str, ctx: Ctx) -> Response:
    form = await changing_form(request, ctx)
    try:
        moved = await ctx.journal.rename_voice(name, check_name(form.get("new", "")), merge=form.get("merge") == "1")
    except ValueError as exc:
        raise ApiError(400, str(exc), param="name") from exc
    except NameTaken as exc:
        raise ApiError(409, f"{exc}: tick “merge”", code="name_taken") from exc
    if not moved:
        raise ApiError(404, f"no voice is remembered as {name!r}", code="unknown_speaker")
    return RedirectResponse("/speakers", status_code=303)


@router.post("/speakers/{name}/forget")
async def forget(request: Request, name: str, ctx: Ctx) -> Response:
    await changing_form(request, ctx)
    if not await ctx.journal.forget_voice(name):
        raise ApiError(404, f"no voice is remembered as {quote(name)!r}", code="unknown_speaker")
    return RedirectResponse("/speakers", status_code=303)
