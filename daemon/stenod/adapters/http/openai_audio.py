"""OpenAI's audio API: ``POST /v1/audio/transcriptions``, ``/v1/audio/translations`` and
``GET /v1/models``, answering exactly OpenAI's shapes (openai-openapi, the ``openai`` SDK's
types), so every OpenAI client works unchanged with ``base_url=http://stenod:8000/v1``.

``model`` picks the provider: OpenAI's names (``whisper-1``, ``gpt-4o-transcribe``, …) mean
``default_provider``; a provider name (``sarvam``) or ``provider/model``
(``nanogpt/Elevenlabs-STT``) picks that one. ``stream=true`` answers Server-Sent Events,
a ``transcript.text.delta`` for each segment as it is decoded, then ``transcript.text.done``.
Who spoke (``gpt-4o-transcribe-diarize``, ``diarized_json``, known speakers) is
:mod:`stenod.adapters.http.openai_diarized`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import ValidationError

from stenod.adapters.http.context import Ctx, HttpContext, require_key
from stenod.adapters.http.errors import ApiError
from stenod.adapters.http.openai_answers import FORMATS, answer
from stenod.adapters.http.openai_diarized import DIARIZED, check_chunking, known_speakers, segment_events
from stenod.adapters.http.spool import SpooledFile, SpooledForm
from stenod.adapters.http.sse import Sse, event_stream
from stenod.adapters.http.uploads import receive, submit_upload, transcript_of, upload_of, wait_finished
from stenod.intake.request_message import JobSpec

__all__ = ["router"]

router = APIRouter(tags=["OpenAI audio API"], dependencies=[Depends(require_key)])

_DIARIZE_MODEL = "gpt-4o-transcribe-diarize"  # default_provider, asked who spoke
_OPENAI_MODELS = ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe", _DIARIZE_MODEL)
_WAKE_SECONDS = 5.0


def _multipart(fields: Mapping[str, Mapping[str, Any]], required: list[str]) -> dict[str, Any]:
    """The request body as OpenAPI states it (the route parses the stream itself)."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": {"type": "object", "required": required, "properties": dict(fields)}}
            },
        }
    }


_COMMON: dict[str, dict[str, Any]] = {
    "file": {"type": "string", "format": "binary", "description": "The audio file."},
    "model": {"type": "string", "description": "whisper-1 (default provider), a provider, or provider/model"},
    "prompt": {"type": "string"},
    "response_format": {"type": "string", "enum": list(FORMATS), "default": "json"},
    "temperature": {"type": "number", "minimum": 0, "maximum": 1},
}
_TRANSCRIBE: dict[str, dict[str, Any]] = {
    **_COMMON,
    "language": {"type": "string", "description": "ISO-639-1 code, e.g. en"},
    "timestamp_granularities[]": {"type": "array", "items": {"type": "string", "enum": ["word", "segment"]}},
    "stream": {"type": "boolean", "default": False},
    "chunking_strategy": {"type": "string", "description": "auto, or a server_vad object as JSON (accepted)"},
    "known_speaker_names[]": {"type": "array", "items": {"type": "string"}, "maxItems": 4},
    "known_speaker_references[]": {
        "type": "array",
        "items": {"type": "string", "description": "data URL of a 2-10 s clip of the speaker"},
        "maxItems": 4,
    },
}


_ANSWERS: dict[str, Any] = {
    "description": "The transcript in the response_format asked for; with stream=true, Server-Sent Events",
    "content": {
        "application/json": {
            "schema": {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}
        },
        "text/plain": {"schema": {"type": "string"}},
        "text/vtt": {"schema": {"type": "string"}},
        "text/event-stream": {"schema": {"type": "string"}},
    },
}


def _provider_of(ctx: HttpContext, model: str | None) -> tuple[str, dict[str, Any]]:
    """The provider ``model`` names, and the options that naming implies."""
    if not model:
        raise ApiError(400, "you must provide a model parameter", param="model")
    names, _ = ctx.daemon.providers()
    if model in _OPENAI_MODELS or model.startswith(("whisper-", "gpt-")):
        return ctx.intake.default_provider, {}
    name, _, sub = model.partition("/")
    if name in names:
        return name, ({"model": sub} if sub else {})
    raise ApiError(
        400,
        f"The model `{model}` does not exist here; use whisper-1, one of {', '.join(sorted(names))}, or provider/model",
        param="model",
        code="model_not_found",
    )


def _option_fields(ctx: HttpContext, provider: str) -> set[str]:
    infos, _ = ctx.intake.provider_infos()
    info = infos.get(provider)
    return set(info.options_model.model_fields) if info is not None else set()


def _spec(ctx: HttpContext, form: SpooledForm, request: Request, *, translate: bool) -> tuple[JobSpec, str, bool]:
    """The job the form asks for, its response format, and whether words were asked for."""
    response_format = form.value("response_format") or "json"
    if response_format not in FORMATS:
        raise ApiError(
            400, f"response_format must be one of {', '.join(FORMATS)}", param="response_format", code="invalid_value"
        )
    granularities = set(
        form.fields.get("timestamp_granularities[]", []) + form.fields.get("timestamp_granularities", [])
    )
    if granularities - {"word", "segment"}:
        raise ApiError(400, "timestamp_granularities[] takes word and/or segment", param="timestamp_granularities")
    words = "word" in granularities
    if granularities and response_format != "verbose_json":
        raise ApiError(
            400, "timestamp_granularities needs response_format=verbose_json", param="timestamp_granularities"
        )
    check_chunking(form)
    provider, options = _provider_of(ctx, form.value("model"))
    fields = _option_fields(ctx, provider)
    prompt, temperature = form.value("prompt"), form.value("temperature")
    if prompt and "initial_prompt" in fields:
        options["initial_prompt"] = prompt
    if temperature not in (None, ""):
        try:
            value = float(temperature)
        except ValueError:
            raise ApiError(400, "temperature must be a number from 0 to 1", param="temperature") from None
        if not 0 <= value <= 1:
            raise ApiError(400, "temperature must be a number from 0 to 1", param="temperature")
        if "temperature" in fields:
            options["temperature"] = value
    if words and "word_timestamps" in fields:
        options["word_timestamps"] = True
    body: dict[str, Any] = {
        "request_id": request.headers.get("idempotency-key") or None,
        "provider": provider,
        "task": "translate" if translate else "transcribe",
        "language": None if translate else (form.value("language") or None),
        "target_language": "en" if translate else None,
        "options": options,
        "diarize": not translate and (response_format == DIARIZED or form.value("model") == _DIARIZE_MODEL),
    }
    try:
        spec = JobSpec.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        param = str(err["loc"][0]) if err["loc"] else None
        raise ApiError(400, f"{param}: {err['msg']}" if param else err["msg"], param=param) from None
    return spec, response_format, words


async def _stream(ctx: HttpContext, job_id: str, spooled: SpooledFile, *, diarized: bool) -> AsyncIterator[Sse | None]:
    """Text deltas as the provider decodes segments, then (``diarized``) each segment with
    its speaker, known only once the whole recording is heard, then the whole text."""
    sent: list[str] = []
    index = 0
    while True:
        ticket = ctx.watch.ticket(job_id)
        view = await ctx.journal.job(job_id)
        for segment in ctx.watch.segments(job_id, index):
            index += 1
            text = str(segment.get("text", "")).strip()
            if text:
                delta = (" " if sent else "") + text
                sent.append(delta)
                yield Sse.of({"type": "transcript.text.delta", "delta": delta})
        if view is not None and view.state.terminal:
            try:
                transcript = transcript_of(view, spooled)
                text = transcript.text
            except ApiError as exc:
                yield Sse.of({"type": "error", "error": exc.body()})
                return
            streamed = "".join(sent)
            if text.startswith(streamed) and len(text) > len(streamed):
                rest = text[len(streamed) :]
                yield Sse.of({"type": "transcript.text.delta", "delta": rest})
            for event in segment_events(transcript) if diarized else ():
                yield Sse.of(event)
            yield Sse.of({"type": "transcript.text.done", "text": text})
            return
        if view is None or ctx.stopping.is_set():
            error = ApiError(503, f"stenod is stopping; job {job_id} goes on: /v1/jobs/{job_id}", type="server_error")
            yield Sse.of({"type": "error", "error": error.body()})
            return
        if not await ctx.watch.wait(ticket, _WAKE_SECONDS):
            yield None


async def _run(ctx: HttpContext, request: Request, *, translate: bool) -> Response:
    form = await receive(ctx, request, "file")
    try:
        spec, response_format, words = _spec(ctx, form, request, translate=translate)
        known = await known_speakers(form)
    except ApiError:
        await ctx.spool.discard(form.folder)
        raise
    stream = not translate and (form.value("stream") or "").lower() == "true"
    spooled = upload_of(form, "file")
    accepted = await submit_upload(ctx, form, "file", spec, known)
    if stream:
        return event_stream(_stream(ctx, accepted.job_id, spooled, diarized=response_format == DIARIZED))
    view = await wait_finished(ctx, accepted.job_id)
    return answer(transcript_of(view, spooled), response_format, words=words, translate=translate)


@router.post(
    "/v1/audio/transcriptions",
    summary="Transcribe audio (OpenAI-compatible)",
    openapi_extra=_multipart(_TRANSCRIBE, ["file", "model"]),
    response_class=Response,
    responses={200: _ANSWERS},
)
async def transcriptions(request: Request, ctx: Ctx) -> Response:
    return await _run(ctx, request, translate=False)


@router.post(
    "/v1/audio/translations",
    summary="Translate speech into English (OpenAI-compatible)",
    openapi_extra=_multipart(_COMMON, ["file", "model"]),
    response_class=Response,
    responses={200: _ANSWERS},
)
async def translations(request: Request, ctx: Ctx) -> Response:
    return await _run(ctx, request, translate=True)


@router.get("/v1/models", summary="Models (providers) this server offers")
async def models(ctx: Ctx) -> dict[str, Any]:
    names, _ = ctx.daemon.providers()
    ids = ["whisper-1", *sorted(names)]
    return {"object": "list", "data": [{"id": i, "object": "model", "created": 0, "owned_by": "stenod"} for i in ids]}
