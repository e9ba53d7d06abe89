"""Speakers over HTTP: naming a speaker of a finished recording
(``PUT /v1/jobs/{id}/items/{index}/speakers/{label}``), and the voices stenod remembers
(``GET /v1/speakers``, ``PATCH`` to rename or merge, ``DELETE`` to forget; a voiceprint is
biometric data, the user's to erase)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from stenod.adapters.http.context import Ctx, require_key
from stenod.adapters.http.errors import ApiError
from stenod.adapters.http.uploads import refuse_when_full
from stenod.errors import CorrectionError, NameTaken
from stenod.who_spoke.voices import check_name

__all__ = ["router"]

router = APIRouter(tags=["Speakers"], dependencies=[Depends(require_key)])

SpeakerName = Annotated[str, Path(min_length=1, max_length=100)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Naming(_Body):
    name: str = Field(min_length=1, max_length=100, description="What the speaker is called from now on.")
    remember: bool = Field(
        default=True, description="Also keep the voice's voiceprint under the name (false: this recording only)."
    )


class NamedAnswer(BaseModel):
    label: str = Field(description="The label the speaker had in this recording.")
    name: str
    remembered: bool = Field(description="Whether the voiceprint is kept, to name the voice in later recordings.")
    why_not: str | None = Field(default=None, description="Why it was not kept, when remember was asked.")


class Voice(BaseModel):
    name: str
    voiceprints: int = Field(description="How many voiceprints are kept under the name.")
    models: list[str] = Field(description="The embedding models that made them.")
    learnt_at: str


class Voices(BaseModel):
    remember_voices: bool = Field(description="[diarization] remember_voices: whether naming keeps voiceprints.")
    speakers: list[Voice]


class Renaming(_Body):
    name: str = Field(min_length=1, max_length=100, description="The new name.")
    merge: bool = Field(default=False, description="Join the voiceprints with those of a name already in use.")


class Renamed(BaseModel):
    name: str
    voiceprints: int = Field(description="How many voiceprints moved to the name.")


@router.put(
    "/v1/jobs/{job_id}/items/{index}/speakers/{label}",
    summary="Name a speaker of a finished recording (and remember the voice)",
    response_model=NamedAnswer,
)
async def name_speaker(
    job_id: Annotated[str, Path(max_length=64)],
    index: Annotated[int, Path(ge=0, le=10_000)],
    label: SpeakerName,
    body: Naming,
    ctx: Ctx,
) -> NamedAnswer:
    await refuse_when_full(ctx, None, what="name")
    try:
        named = await ctx.naming.name(job_id, index, label, body.name, for_good=body.remember)
    except CorrectionError as exc:
        status = 400 if "characters" in str(exc) else 404
        raise ApiError(status, str(exc), param="name" if status == 400 else None) from None
    return NamedAnswer(label=named.label, name=named.name, remembered=named.remembered, why_not=named.why_not)


@router.get("/v1/speakers", summary="The voices stenod remembers, by name", response_model=Voices)
async def list_speakers(ctx: Ctx) -> Voices:
    voices = await ctx.journal.voices()
    return Voices(
        remember_voices=ctx.naming.remember_voices,
        speakers=[
            Voice(name=v.name, voiceprints=v.voiceprints, models=list(v.models), learnt_at=v.learnt_at) for v in voices
        ],
    )


@router.patch(
    "/v1/speakers/{name}", summary="Rename a remembered voice, or merge it into another", response_model=Renamed
)
async def rename_speaker(name: SpeakerName, body: Renaming, ctx: Ctx) -> Renamed:
    await refuse_when_full(ctx, None, what="rename")
    try:
        new_name = check_name(body.name)
        moved = await ctx.journal.rename_voice(name, new_name, merge=body.merge)
    except ValueError as exc:
        raise ApiError(400, str(exc), param="name") from None
    except NameTaken as exc:
        raise ApiError(409, f'{exc}: send "merge": true', param="name", code="name_taken") from None
    if not moved:
        raise ApiError(404, f"no voice is remembered as {name!r}", code="unknown_speaker")
    return Renamed(name=new_name, voiceprints=moved)


@router.delete(
    "/v1/speakers/{name}", summary="Forget a voice: delete every voiceprint kept under the name", status_code=204
)
async def forget_speaker(name: SpeakerName, ctx: Ctx) -> Response:
    await refuse_when_full(ctx, None, what="change")
    if not await ctx.journal.forget_voice(name):
        raise ApiError(404, f"no voice is remembered as {name!r}", code="unknown_speaker")
    return Response(status_code=204)
