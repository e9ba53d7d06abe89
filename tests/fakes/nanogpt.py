"""A faithful fake of NanoGPT's speech-to-text API (``/api/transcribe`` + ``/status``).

Follows ``shared/providers/nanogpt.md``: ``x-api-key`` auth, multipart upload capped at
3 MB (413), sync models answer 200 with ``transcription`` + ``metadata``, async models
(Elevenlabs-STT) answer 202 with ``runId`` and billing context, and the POST status
endpoint walks ``pending → processing → completed|failed``. The "transcript" is made
up, but its timings come from the real duration of the uploaded audio (decoded with
PyAV), so stitching can be checked.

Control API under ``/__fake__/``: ``GET stats``, ``POST reset``, ``POST config``
(``polls_until_done``, ``fail_runs``, ``max_upload_bytes``) and ``POST faults`` (a
:mod:`tests.fakes.faultscript` script; routes ``transcribe`` and ``status``, subject the
file name or the run id; ``shape`` picks the error envelope: ``int`` (default),
``string`` or ``object``).

Run it in its own process with ``python -m tests.fakes.nanogpt --port N``.
"""

from __future__ import annotations

import argparse
import array
import io
import itertools
import math
import threading
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from support.server import run_forever
from tests.fakes.faultscript import FaultScript, generic_fault

DEFAULT_API_KEY = "test-nanogpt-key"
SYNC_MODELS = {
    "Whisper-Large-V3": 0.0005,
    "Wizper": 0.01,
    "gpt-4o-mini-transcribe": 0.003,
    "openai-whisper-with-video": 0.06,
}
ASYNC_MODELS = {"Elevenlabs-STT": 0.03}
AUDIO_TYPES = ("mp3", "wav", "m4a", "ogg", "aac")


@dataclass
class Run:
    """One async transcription run."""

    run_id: str
    context: dict[str, Any]
    result: dict[str, Any]
    polls_left: int
    fail_reason: str | None = None
    polls: int = 0


@dataclass
class FakeNanoGptState:
    """Everything the fake knows; shared between the app and in-process tests."""

    api_key: str = DEFAULT_API_KEY
    max_upload_bytes: int = 3_000_000
    polls_until_done: int = 1
    fail_runs: list[str] = field(default_factory=list)
    faults: FaultScript = field(default_factory=FaultScript)
    runs: dict[str, Run] = field(default_factory=dict)
    uploads: list[dict[str, Any]] = field(default_factory=list)
    status_bodies: list[dict[str, Any]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def count(self, name: str) -> None:
        with self.lock:
            self.counters[name] = self.counters.get(name, 0) + 1

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "counters": dict(self.counters),
                "uploads": [dict(u) for u in self.uploads],
                "runs": {r.run_id: {"polls": r.polls, "context": r.context} for r in self.runs.values()},
                "status_bodies": list(self.status_bodies),
            }


def error_response(
    status: int,
    message: str,
    *,
    shape: str | None = None,
    code: str | None = None,
    retry_after: float | None = None,
) -> Response:
    """An error in one of NanoGPT's three documented envelopes."""
    if shape == "string":
        body: dict[str, Any] = {"error": message, "status": status}
        if status == 402:
            body["requiredBalance"] = 0.05
    elif shape == "object":
        body = {"error": {"message": message, "code": code or "rate_limit_exceeded", "type": "rate_limit_error"}}
    else:
        body = {"error": status, "message": message}
    headers = {"x-request-id": f"req-{status}"}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return JSONResponse(body, status_code=status, headers=headers)


def create_app(state: FakeNanoGptState) -> Starlette:
    """The ASGI app serving ``state``."""

    async def faulted(route: str, subject: str | None = None) -> Response | None:
        with state.lock:
            rule = state.faults.next(route, subject)
        if (generic := await generic_fault(rule)) is not None:
            return generic
        if rule is None or rule.status is None:
            return None
        return error_response(
            rule.status,
            rule.message or "injected fault",
            shape=rule.shape,
            code=rule.code,
            retry_after=rule.retry_after,
        )

    def authorised(request: Request) -> bool:
        key = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")
        return key == state.api_key

    async def transcribe(request: Request) -> Response:
        state.count("transcribe_calls")
        if not authorised(request):
            return error_response(401, "Invalid or missing API key")
        if (fault := await faulted("transcribe")) is not None:
            return fault
        if "multipart/form-data" not in request.headers.get("content-type", ""):
            return error_response(400, "only multipart uploads are supported by this fake")
        async with request.form(max_part_size=64 * 1024 * 1024) as form:
            upload = form.get("audio")
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
            if upload is None or isinstance(upload, str):
                return error_response(400, "audio file or audioUrl is required")
            data = await upload.read()
            filename = upload.filename or "audio"
        if len(data) > state.max_upload_bytes:
            return error_response(413, "File too large for direct upload; use audioUrl")
        model = fields.get("model", "Whisper-Large-V3")
        if model not in SYNC_MODELS and model not in ASYNC_MODELS:
            return error_response(400, f"Invalid model {model}")
        if filename.rsplit(".", 1)[-1].lower() not in AUDIO_TYPES:
            return error_response(400, "Unsupported file format")
        seconds = decoded_seconds(data)
        if seconds is None:
            return error_response(400, "Unsupported file format")
        diarize = fields.get("diarize") == "true"
        with state.lock:
            state.uploads.append(
                {
                    "filename": filename,
                    "size": len(data),
                    "model": model,
                    "seconds": seconds,
                    "language": fields.get("language"),
                    "actualDuration": fields.get("actualDuration"),
                    "diarize": diarize,
                    "tagAudioEvents": fields.get("tagAudioEvents") == "true",
                }
            )
        price = SYNC_MODELS.get(model, ASYNC_MODELS.get(model, 0.0))
        minutes = math.ceil(seconds / 6) / 10  # billed per started 0.1 minute
        metadata = {
            "fileName": filename,
            "fileSize": len(data),
            "chargedDuration": minutes,
            "actualDuration": round(seconds / 60, 4),
            "language": fields.get("language") or "en",
            "cost": round(minutes * price, 6),
            "currency": "USD",
            "model": model,
        }
        if model in SYNC_MODELS:
            return JSONResponse({"transcription": f"fake transcript of {filename}", "metadata": metadata})
        run_id = f"run_{next(state._ids):06d}"
        context = {
            "runId": run_id,
            "status": "pending",
            "model": model,
            "cost": metadata["cost"],
            "paymentSource": "USD",
            "isApiRequest": True,
            "fileName": filename,
            "fileSize": len(data),
            "chargedDuration": minutes,
            "diarize": diarize,
        }
        result = {"status": "completed", "metadata": metadata, **timed_words(seconds, diarize)}
        if fields.get("tagAudioEvents") == "true":
            result["words"].insert(0, {"text": "(laughter)", "start": 0.0, "end": 0.1, "type": "audio_event"})
        with state.lock:
            fail = state.fail_runs.pop(0) if state.fail_runs else None
            state.runs[run_id] = Run(run_id, context, result, state.polls_until_done, fail)
        return JSONResponse(context, status_code=202)

    async def status(request: Request) -> Response:
        state.count("status_calls")
        if not authorised(request):
            return error_response(401, "Invalid or missing API key")
        if (fault := await faulted("status")) is not None:
            return fault
        try:
            body = await request.json()
        except ValueError:
            return error_response(400, "invalid JSON")
        if not isinstance(body, dict) or not body.get("runId"):
            return error_response(400, "runId is required")
        with state.lock:
            state.status_bodies.append(body)
            run = state.runs.get(body["runId"])
            if run is None:
                return error_response(404, "Transcription job not found")
            run.polls += 1
            if run.polls_left > 0:
                run.polls_left -= 1
                return JSONResponse({"status": "pending" if run.polls == 1 else "processing"})
            if run.fail_reason:
                return JSONResponse({"status": "failed", "error": run.fail_reason})
            return JSONResponse(run.result)

    async def control_stats(request: Request) -> Response:
        return JSONResponse(state.stats())

    async def control_reset(request: Request) -> Response:
        with state.lock:
            state.faults.clear()
            state.fail_runs.clear()
            state.runs.clear()
            state.uploads.clear()
            state.status_bodies.clear()
            state.counters.clear()
            state.polls_until_done = 1
            state._ids = itertools.count(1)
        return JSONResponse({"ok": True})

    async def control_config(request: Request) -> Response:
        body = await request.json()
        with state.lock:
            for key in ("polls_until_done", "max_upload_bytes", "api_key"):
                if key in body:
                    setattr(state, key, body[key])
            state.fail_runs.extend(body.get("fail_runs", []))
        return JSONResponse({"ok": True})

    async def control_faults(request: Request) -> Response:
        body = await request.json()
        with state.lock:
            state.faults.load(body if isinstance(body, list) else [body])
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/api/transcribe", transcribe, methods=["POST"]),
            Route("/api/transcribe/status", status, methods=["POST"]),
            Route("/__fake__/stats", control_stats, methods=["GET"]),
            Route("/__fake__/reset", control_reset, methods=["POST"]),
            Route("/__fake__/config", control_config, methods=["POST"]),
            Route("/__fake__/faults", control_faults, methods=["POST"]),
        ]
    )


def decoded_seconds(data: bytes) -> float | None:
    """The real duration of an uploaded recording, or None if it is not audio."""
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            samples = sum(frame.samples for frame in container.decode(stream))
            return samples / stream.codec_context.sample_rate
    except av.FFmpegError:
        return None


def timed_words(seconds: float, diarize: bool) -> dict[str, Any]:
    """ElevenLabs-style words (one per second, a full stop every fifth, spacing tokens
    between), optional diarization, covering the whole recording."""
    words: list[dict[str, Any]] = []
    segments: list[dict[str, Any]] = []
    count = max(1, int(seconds))
    for n in range(count):
        speaker = (n // 5) % 2
        start = min(n + 0.1, seconds)
        end = min(n + 0.9, seconds) if n < count - 1 else seconds
        if words:
            words.append({"text": " ", "start": start, "end": start, "type": "spacing"})
        entry = {"text": f"w{n}", "start": round(start, 3), "end": round(end, 3), "type": "word"}
        if diarize:
            entry["speaker_id"] = f"speaker_{speaker}"
        words.append(entry)
        if n % 5 == 4:
            words.append({"text": ".", "start": round(end, 3), "end": round(end, 3), "type": "punctuation"})
        if diarize and n % 5 == 0:
            segments.append({"speaker": f"Speaker {speaker + 1}", "text": "", "start": round(start, 3), "end": 0})
        if diarize:
            segments[-1]["text"] = f"{segments[-1]['text']} w{n}".strip()
            segments[-1]["end"] = round(end, 3)
    text = " ".join(w["text"] for w in words if w["type"] == "word")
    body: dict[str, Any] = {"transcription": text, "words": words}
    if diarize:
        body["diarization"] = {"segments": segments}
    return body


def write_pattern_wav(path: Path, pattern: list[tuple[float, bool]], *, rate: int = 44_100) -> float:
    """Write a 16-bit mono WAV of tone (``True``) and silence (``False``) stretches;
    returns its duration in seconds. A deterministic stand-in for speech with pauses."""
    period = array.array("h", (int(8000 * math.sin(2 * math.pi * n / 147)) for n in range(147)))  # 300 Hz
    total = 0
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        for seconds, loud in pattern:
            samples = int(seconds * rate)
            block = period * (samples // 147 + 1) if loud else array.array("h", bytes(2 * samples))
            out.writeframes(block[:samples].tobytes())
            total += samples
    return total / rate


class FakeNanoGptServer:
    """The fake's state plus its ASGI app, for ``serve(fake.app)`` in tests."""

    def __init__(self, api_key: str = DEFAULT_API_KEY) -> None:
        self.state = FakeNanoGptState(api_key=api_key)
        self.app = create_app(self.state)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    args = parser.parse_args()
    run_forever(FakeNanoGptServer(args.api_key).app, args.port)


if __name__ == "__main__":
    main()
