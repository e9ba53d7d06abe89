"""NanoGPT's speech-to-text HTTP API: ``POST /transcribe`` and ``POST /transcribe/status``.

The one place that knows NanoGPT's wire format and its error envelopes (``error`` may be
an int, a string or an object, depending on the route's vintage).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import httpx

from stenod.provider import (
    AuthError,
    Diarization,
    FileUpload,
    Json,
    MultipartBody,
    PermanentError,
    RetryableError,
    provider_http_errors,
    retry_after_seconds,
)

NAME = "nanogpt"
REQUEST_ID_HEADER = "x-request-id"
# The 202 fields the status call wants echoed back (billing context); all non-secret.
ECHOED_FIELDS = (
    "runId",
    "cost",
    "paymentSource",
    "isApiRequest",
    "fileName",
    "fileSize",
    "chargedDuration",
    "diarize",
)


@dataclass(frozen=True, slots=True)
class Submitted:
    """The answer to a transcribe call: a finished result (sync model) or a run (async)."""

    result: Mapping[str, Json] | None = None
    run: Mapping[str, Json] | None = None


SPEAKER_MODELS = frozenset({"elevenlabs-stt"})  # the models that label speakers (``diarize``)


def diarize_for(model: str, option: bool, asked: Diarization | None) -> bool:
    """Whether to ask ``model`` for speakers: the ``diarize`` option, or a job asking who
    spoke; a job asking of a model that cannot is a permanent error that names one that can."""
    if asked is not None and model.lower() not in SPEAKER_MODELS:
        raise PermanentError(
            f"nanogpt model {model!r} cannot say who spoke; use options.model = 'Elevenlabs-STT'",
            code="diarization_unavailable",
        )
    return option or asked is not None


@dataclass(frozen=True, slots=True)
class TranscribeRequest:
    """One upload: the audio and the form fields that go with it."""

    audio: FileUpload
    model: str
    language: str | None
    minutes: float | None
    diarize: bool
    tag_audio_events: bool


class NanoGptApi:
    """Thin async client over the shared ``httpx.AsyncClient``."""

    def __init__(self, http: httpx.AsyncClient, base_url: str, api_key: str, timeout: float) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._headers = {"x-api-key": api_key}
        self._timeout = timeout

    async def transcribe(self, request: TranscribeRequest) -> Submitted:
        """Upload one recording. Returns the result (200) or the run to poll (202).

        Raises AuthError, PermanentError (402 balance, 413 too large, 400), RetryableError.
        """
        data = {"model": request.model}
        if request.language:
            data["language"] = request.language
        if request.minutes is not None:
            data["actualDuration"] = f"{request.minutes:.4f}"
        if request.diarize:
            data["diarize"] = "true"
        if request.tag_audio_events:
            data["tagAudioEvents"] = "true"
        audio = replace(request.audio, content_type=_mime(request.audio.filename))
        form = MultipartBody(list(data.items()), [("audio", audio)])
        response = await self._post("/transcribe", content=form.stream(), headers=form.headers)
        body = _json_object(response)
        if response.status_code == 202:
            if not isinstance(body.get("runId"), str) or not body["runId"]:
                raise RetryableError("nanogpt accepted the upload but sent no runId", code="malformed_response")
            return Submitted(run={key: body[key] for key in ECHOED_FIELDS if key in body})
        if not isinstance(body.get("transcription"), str):
            raise RetryableError("nanogpt answered without a transcription", code="malformed_response")
        return Submitted(result=body)

    async def status(self, run: Mapping[str, Json]) -> Mapping[str, Json]:
        """Ask for an async run's state, echoing the billing context of its 202 answer.

        Raises PermanentError when NanoGPT no longer knows the run (404).
        """
        response = await self._post("/transcribe/status", json=dict(run))
        body = _json_object(response)
        if body.get("status") not in ("pending", "processing", "completed", "failed"):
            raise RetryableError(
                f"nanogpt sent an unknown run status {body.get('status')!r}", code="malformed_response"
            )
        return body

    async def _post(self, path: str, *, headers: Mapping[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        with provider_http_errors(NAME, request_id_header=REQUEST_ID_HEADER):
            response = await self._http.post(
                self._base + path, headers={**self._headers, **(headers or {})}, timeout=self._timeout, **kwargs
            )
        raise_for_status(response, path)
        return response


def raise_for_status(response: httpx.Response, path: str = "/transcribe") -> None:
    """Map a non-2xx answer to the stenod error taxonomy with NanoGPT's own message."""
    code = response.status_code
    if code < 400:
        return
    kind, message = describe_error(response)
    rid = response.headers.get(REQUEST_ID_HEADER)
    detail = f"{message} (request id {rid})" if rid else message
    if code in (401, 403):
        raise AuthError(
            f"nanogpt rejected the API key ({code}: {detail}); check [providers.nanogpt] api_key "
            "or $CREDENTIALS_DIRECTORY/nanogpt.api_key"
        )
    if code == 402:
        raise PermanentError(
            f"nanogpt: insufficient balance for this transcription ({detail}); top up your "
            "NanoGPT account, then resubmit",
            code="insufficient_balance",
            hint="Top up the NanoGPT account balance.",
        )
    if code == 413:
        raise PermanentError(f"nanogpt: the upload is too large ({detail})", code="too_large")
    if code == 404 and path.endswith("/status"):
        raise PermanentError(f"nanogpt no longer knows this transcription run ({detail})", code="unknown_run")
    if code in (408, 429) or code >= 500:
        raise RetryableError(
            f"nanogpt answered {code}: {detail}",
            retry_after=retry_after_seconds(response),
            code=kind or f"http_{code}",
        )
    raise PermanentError(f"nanogpt refused the request ({code}): {detail}", code=kind or f"http_{code}")


def describe_error(response: httpx.Response) -> tuple[str | None, str]:
    """``(code, message)`` from any of NanoGPT's error bodies. Never raises."""
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        return None, response.text[:300].strip() or response.reason_phrase
    if not isinstance(body, Mapping):
        return None, str(body)[:300]
    error = body.get("error")
    code: str | None = None
    message = body.get("message")
    if isinstance(error, Mapping):
        raw_code = error.get("code") or error.get("type")
        code = str(raw_code) if raw_code else None
        message = error.get("message") or message
    elif isinstance(error, str):
        message = error if not message else f"{error}: {message}"
    elif isinstance(error, int) and not isinstance(error, bool):
        code = f"http_{error}"
    if "requiredBalance" in body:
        message = f"{message or 'insufficient balance'}; required balance {body['requiredBalance']}"
    return code, str(message or response.reason_phrase)[:300]


def _json_object(response: httpx.Response) -> Mapping[str, Json]:
    with provider_http_errors(NAME):
        body = response.json()
    if not isinstance(body, Mapping):
        raise RetryableError("nanogpt sent a JSON answer of the wrong shape", code="malformed_response")
    return body


def _mime(filename: str) -> str:
    suffix = filename.rsplit(".", 1)[-1].lower()
    return {
        "mp3": "audio/mpeg",
        "wav": "audio/wav",
        "m4a": "audio/mp4",
        "ogg": "audio/ogg",
        "aac": "audio/aac",
    }.get(suffix, "application/octet-stream")
