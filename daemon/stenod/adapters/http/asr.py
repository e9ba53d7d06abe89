"""whisper-asr-webservice's API, as Bazarr's Whisper provider calls it: ``POST /asr``,
``POST /detect-language`` and ``GET /status``.

The shapes follow that project's ``app/webservice.py`` and ``app/utils.py``: query
parameters, the file in a part named ``audio_file``, ``encode=false`` meaning raw 16 kHz
mono 16-bit PCM with no header (what Bazarr sends), a ``text/plain`` answer with
``Content-Disposition: attachment; filename="<name>.<output>"``. The work is a journaled
job of ``default_provider`` like any other. Bazarr cannot send a key, so these three
routes also admit clients from ``[http] keyless_networks``.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError

from stenod.adapters.http.context import Ctx, HttpContext, require_key_or_keyless
from stenod.adapters.http.errors import ApiError
from stenod.adapters.http.uploads import receive, submit_upload, transcript_of, upload_of, wait_finished
from stenod.formats import render_srt, render_tsv, render_txt, render_vtt
from stenod.intake.request_message import JobSpec
from stenod.provider import Transcript, language_name

__all__ = ["router"]

router = APIRouter(tags=["whisper-asr-webservice API"], dependencies=[Depends(require_key_or_keyless)])

_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["audio_file"],
                    "properties": {"audio_file": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}
Encode = Annotated[bool, Query(description="false: the file is raw 16 kHz mono 16-bit PCM, no header")]


def _txt(t: Transcript) -> bytes:
    if t.speakers or any(s.speaker for s in t.segments):
        return render_txt(t)  # in speaker turns, as every other output with speakers
    lines = [s.text.strip() for s in t.segments if s.text.strip()] or ([t.text.strip()] if t.text.strip() else [])
    return "".join(f"{line}\n" for line in lines).encode()


def _json(t: Transcript) -> bytes:
    segments = [
        {"id": i, "start": s.start, "end": s.end, "text": s.text, **({"speaker": s.speaker} if s.speaker else {})}
        | dict(s.extra)
        for i, s in enumerate(t.segments)
    ]
    body: dict[str, Any] = {"text": t.text, "segments": segments, "language": t.language}
    if t.words is not None:
        body["words"] = [
            {"word": w.text, "start": w.start, "end": w.end, "probability": w.confidence}
            | ({"speaker": w.speaker} if w.speaker else {})
            for w in t.words
        ]
    return json.dumps(body, ensure_ascii=False).encode()


_RENDER = {"txt": _txt, "vtt": render_vtt, "srt": render_srt, "tsv": render_tsv, "json": _json}


def _options(ctx: HttpContext, **wanted: Any) -> dict[str, Any]:
    """The asked-for decoding options the default provider understands."""
    infos, _ = ctx.intake.provider_infos()
    info = infos.get(ctx.intake.default_provider)
    fields = set(info.options_model.model_fields) if info is not None else set()
    return {k: v for k, v in wanted.items() if v is not None and k in fields}


async def _job(ctx: HttpContext, request: Request, encode: bool, spec: dict[str, Any]) -> tuple[Transcript, str]:
    form = await receive(ctx, request, "audio_file", raw_pcm=not encode)
    spooled = upload_of(form, "audio_file")
    try:
        job = JobSpec.model_validate({"request_id": request.headers.get("idempotency-key") or None, **spec})
    except ValidationError as exc:
        await ctx.spool.discard(form.folder)
        first = exc.errors(include_url=False)[0]
        param = str(first["loc"][0]) if first["loc"] else None  # a speaker rule names no one field
        raise ApiError(400, str(first["msg"]).removeprefix("Value error, "), param=param) from None
    accepted = await submit_upload(ctx, form, "audio_file", job)
    return transcript_of(await wait_finished(ctx, accepted.job_id), spooled), spooled.original or spooled.name


@router.post(
    "/asr",
    summary="Transcribe or translate (whisper-asr-webservice)",
    openapi_extra=_FORM,
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def asr(
    request: Request,
    ctx: Ctx,
    encode: Encode = True,
    task: Literal["transcribe", "translate"] = "transcribe",
    language: Annotated[str | None, Query(max_length=35)] = None,
    initial_prompt: Annotated[str | None, Query(max_length=2000)] = None,
    vad_filter: bool | None = None,
    word_timestamps: bool = False,
    output: Literal["txt", "vtt", "srt", "tsv", "json"] = "txt",
    diarize: bool = False,
    min_speakers: Annotated[int | None, Query(description="with diarize: at least this many voices")] = None,
    max_speakers: Annotated[int | None, Query(description="with diarize: at most this many voices")] = None,
) -> Response:
    spec = {
        "diarize": diarize,
        "min_speakers": min_speakers,
        "max_speakers": max_speakers,
        "task": task,
        "language": (language or None) if task == "transcribe" else None,
        "target_language": "en" if task == "translate" else None,
        "options": _options(
            ctx, initial_prompt=initial_prompt, vad_filter=vad_filter, word_timestamps=word_timestamps or None
        ),
    }
    transcript, name = await _job(ctx, request, encode, spec)
    return Response(
        _RENDER[output](transcript),
        media_type="text/plain",
        headers={
            "Asr-Engine": f"stenod/{ctx.intake.default_provider}",
            "Content-Disposition": f'attachment; filename="{quote(name)}.{output}"',
        },
    )


@router.post("/detect-language", summary="Detect the spoken language (whisper-asr-webservice)", openapi_extra=_FORM)
async def detect_language(request: Request, ctx: Ctx, encode: Encode = True) -> dict[str, Any]:
    options = _options(ctx, detect_language_only=True)
    transcript, _ = await _job(ctx, request, encode, {"task": "transcribe", "options": options})
    code = transcript.language or "unknown"
    return {
        "detected_language": language_name(code),
        "language_code": code,
        "confidence": transcript.language_probability if transcript.language_probability is not None else 0.0,
    }


@router.get("/status", summary="Whether stenod answers, and its version (Bazarr's Test Connection)")
async def status(ctx: Ctx) -> dict[str, Any]:
    names, _ = ctx.daemon.providers()
    return {
        "status": "ok",
        "version": f"stenod {ctx.version}",
        "asr_engine": ctx.intake.default_provider,
        "providers": sorted(names),
    }
