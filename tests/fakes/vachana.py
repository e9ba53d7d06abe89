"""A faithful fake of Vachana's STT v3 batch submit/status API (shared/providers/vachana.md §A).

``POST /stt/v3/batch/submit`` takes a multipart form (``audio_files`` repeated, 1–10
files, ≤ 80 × 10^6 bytes in all, ``language_code`` required, ``is_multi_channel``,
``format``, ``itn_native_numerals``) and answers ``{"job_id", "status": "submitted", …}``.
``GET /stt/v3/batch/status/{job_id}`` moves ``submitted → processing → completed`` over
accepted calls and returns results inline; a second status call for a job within the
poll interval (60 s, configurable; the clock starts at submit) gets 429 ``RATE_LIMITED``
with ``Retry-After``. Every call needs ``X-API-Key-ID``; ``X-API-Request-ID`` is recorded.
Error bodies use all of Vachana's shapes. Transcripts are deterministic (name, size).

Control API: ``POST /__fake__/faults`` (rules from :mod:`tests.fakes.faultscript`, routes
``submit`` and ``status``, ``shape`` one of ``detail``, ``flat``, ``flat_error``,
``rest``, ``text``; plus ``fail_files`` globs, ``job_failure`` and
``string_speaker_ids``), ``POST /__fake__/config``, ``GET /__fake__/stats``,
``POST /__fake__/reset``. Run alone with ``python -m tests.fakes.vachana --port N``.
"""

from __future__ import annotations

import argparse
import fnmatch
import math
import secrets
import time
from dataclasses import asdict, dataclass, fields
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.fakes.faultscript import FaultRule, FaultScript, generic_fault

TEN_LANGUAGES = ("hi-IN", "en-IN", "ta-IN", "te-IN", "kn-IN", "ml-IN", "bn-IN", "gu-IN", "mr-IN", "pa-IN")
EXTRA_LANGUAGES = ("en-hi-IN-latn", "en-hi-in-cm")
FORMATS = {"aac", "m4a", "wav", "flac", "ogg", "oga", "opus"}
_SENTIMENTS = ("Neutral", "Positive", "Negative")
_EMOTIONS = ("Neutral", "Happy", "Sad")


@dataclass
class VachanaFakeConfig:
    api_key: str = "test-vachana-key"
    poll_interval_seconds: float = 60.0
    polls_to_complete: int = 2  # accepted status calls until the job is finished
    seconds_to_complete: float | None = None  # if set, finish by time since submit instead
    max_files: int = 10
    max_body_bytes: int = 80_000_000


@dataclass
class _Job:
    job_id: str
    request_id: str | None
    language: str
    fields: dict[str, str]
    files: list[tuple[str, int]]  # (name, size)
    submitted_at: float
    clock: float  # when the last accepted status call (or the submit) happened
    polls: int = 0
    status: str = "submitted"
    results: list[dict[str, Any]] | None = None
    error: str | None = None
    rejected_calls: int = 0


class FakeVachana:
    """The fake's state and its Starlette app (``.app``)."""

    def __init__(self, config: VachanaFakeConfig | None = None) -> None:
        self._initial = config or VachanaFakeConfig()
        self.reset()
        self.app = Starlette(
            routes=[
                Route("/stt/v3/batch/submit", self._endpoint("submit", self._submit), methods=["POST"]),
                Route("/stt/v3/batch/status/{job_id}", self._endpoint("status", self._status), methods=["GET"]),
                Route("/__fake__/faults", self._set_faults, methods=["POST"]),
                Route("/__fake__/config", self._set_config, methods=["POST"]),
                Route("/__fake__/stats", self._stats, methods=["GET"]),
                Route("/__fake__/reset", self._reset, methods=["POST"]),
            ]
        )

    def reset(self) -> None:
        self.config = VachanaFakeConfig(**asdict(self._initial))
        self.faults = FaultScript()
        self.fail_files: list[str] = []
        self.job_failure: str | None = None
        self.string_speaker_ids = False
        self.jobs: dict[str, _Job] = {}
        self.calls: dict[str, int] = {}
        self.request_ids: list[tuple[str, str | None]] = []
        self.submit_fields: list[dict[str, str]] = []
        self.jobs_created = 0
        self.status_calls: dict[str, list[float]] = {}

    def _endpoint(self, route: str, handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            self.calls[route] = self.calls.get(route, 0) + 1
            self.request_ids.append((route, request.headers.get("x-api-request-id")))
            if route == "status":  # every arrival, also those answered with a fault
                self.status_calls.setdefault(request.path_params["job_id"], []).append(time.time())
            if request.headers.get("x-api-key-id") != self.config.api_key:
                await _drain(request)
                return _error(401, "UNAUTHORIZED", "Invalid or missing API key", shape="detail")
            rule = self.faults.next(route, request.path_params.get("job_id"))
            if (early := await generic_fault(rule)) is not None:
                await _drain(request)
                return early
            if rule is not None and rule.status is not None:
                await _drain(request)
                return _fault_error(rule)
            response: Response = await handler(request)
            return response

        return endpoint

    async def _submit(self, request: Request) -> Response:
        declared = int(request.headers.get("content-length") or 0)
        if declared > self.config.max_body_bytes:
            await _drain(request)
            limit = self.config.max_body_bytes
            return _error(413, "FILE_TOO_LARGE", f"Request body exceeds {limit} bytes", shape="detail")
        form = await request.form(max_files=1000, max_fields=100)
        try:
            files = [f for f in form.getlist("audio_files") if isinstance(f, UploadFile)]
            fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
            problem = await self._check_submit(files, fields)
            if problem is not None:
                return problem
            sizes = [(f.filename or "", f.size or 0) for f in files]
        finally:
            await form.close()
        now = time.monotonic()
        job_id = f"batch_{secrets.token_hex(6)}"
        language = fields["language_code"]
        self.jobs[job_id] = _Job(
            job_id,
            request.headers.get("x-api-request-id"),
            language,
            fields,
            sizes,
            submitted_at=now,
            clock=now,
        )
        self.jobs_created += 1
        self.submit_fields.append(fields)
        interval = f"{self.config.poll_interval_seconds:g}"
        return JSONResponse(
            {
                "job_id": job_id,
                "status": "submitted",
                "file_count": len(files),
                "message": f"Batch accepted. Poll the status at most every {interval} seconds.",
            }
        )

    async def _check_submit(self, files: list[UploadFile], fields: dict[str, str]) -> Response | None:
        if not files:
            return _error(400, "BAD_REQUEST", "No audio files provided in 'audio_files'", shape="flat")
        if len(files) > self.config.max_files:
            return _error(400, "TOO_MANY_FILES", f"At most {self.config.max_files} files per request", shape="detail")
        for upload in files:
            name = upload.filename or ""
            if not upload.size:
                return _error(400, "BAD_REQUEST", f"File {name!r} is empty", shape="flat_error")
            if "/" in name or "\\" in name or name.rsplit(".", 1)[-1].lower() not in FORMATS or "." not in name:
                return _error(400, "INVALID_REQUEST_ERROR", f"Unsupported audio format: {name!r}", shape="rest")
        language = fields.get("language_code")
        if not language:
            return _error(400, "BAD_REQUEST", "language_code is required", shape="detail")
        codes = language.split(",")
        valid = language in EXTRA_LANGUAGES or all(c in TEN_LANGUAGES for c in codes)
        if not valid:
            return _error(400, "BAD_REQUEST", f"Unsupported language_code {language!r}", shape="detail")
        for flag in ("is_multi_channel", "itn_native_numerals"):
            if fields.get(flag, "false") not in ("true", "false"):
                return _error(400, "BAD_REQUEST", f"{flag} must be 'true' or 'false'", shape="detail")
        fmt = fields.get("format", "verbatim")
        if fmt not in ("verbatim", "transcribe"):
            return _error(400, "BAD_REQUEST", f"format must be verbatim or transcribe, not {fmt!r}", shape="detail")
        if fmt == "transcribe" and language not in ("hi-IN", "en-IN"):
            return _error(400, "BAD_REQUEST", "format=transcribe is supported only for hi-IN and en-IN", "detail")
        return None

    async def _status(self, request: Request) -> Response:
        job = self.jobs.get(request.path_params["job_id"])
        if job is None:
            return _error(404, "NOT_FOUND", "Job not found", shape="detail")
        now = time.monotonic()
        wait = job.clock + self.config.poll_interval_seconds - now
        if wait > 0:
            job.rejected_calls += 1
            message = f"Poll at most once every {self.config.poll_interval_seconds:g} seconds per job"
            return _error(429, "RATE_LIMITED", message, shape="detail", retry_after=math.ceil(wait))
        job.clock = now
        job.polls += 1
        self._advance(job, now)
        return JSONResponse(self._status_body(job))

    def _advance(self, job: _Job, now: float) -> None:
        if job.status in ("completed", "failed"):
            return
        if self.config.seconds_to_complete is not None:
            finished = now - job.submitted_at >= self.config.seconds_to_complete
        else:
            finished = job.polls >= self.config.polls_to_complete
        if not finished:
            job.status = "processing"
            return
        if self.job_failure is not None:
            job.status, job.error = "failed", self.job_failure
            return
        job.results = [self._file_result(name, size, job) for name, size in job.files]
        ok = sum(r["status"] == "completed" for r in job.results)
        job.status = "completed" if ok else "failed"
        job.error = None if ok else "All files failed"

    def _file_result(self, name: str, size: int, job: _Job) -> dict[str, Any]:
        if any(fnmatch.fnmatch(name, p) for p in self.fail_files):
            return {
                "filename": name,
                "status": "failed",
                "error": "Audio decoding failed",
                "full_transcript": "",
                "total_duration": 0,
                "segments": [],
            }
        stem = name.rsplit(".", 1)[0]
        count = 2 + size % 3
        language = job.language if "," not in job.language else "hi-IN"
        segments: list[dict[str, Any]] = [
            {
                "segment_id": k,
                "start_time": round(k * 3.0 + 0.32, 2),
                "end_time": round(k * 3.0 + 2.9, 2),
                "text": f"segment {k + 1} of {stem}",
                "speaker_id": str(k % 2 + 1) if self.string_speaker_ids else k % 2 + 1,
                "confidence": round(0.8 + (size + k) % 20 / 100, 2),
                "language_detected": language,
                "sentiment": _SENTIMENTS[(size + k) % 3],
                "emotion": _EMOTIONS[(size + 2 * k) % 3],
            }
            for k in range(count)
        ]
        return {
            "filename": name,
            "status": "completed",
            "error": None,
            "full_transcript": " ".join(s["text"] for s in segments),
            "total_duration": round(count * 3.0, 2),
            "segments": segments,
        }

    def _status_body(self, job: _Job) -> dict[str, Any]:
        done = job.status in ("completed", "failed")
        results = job.results or []
        return {
            "job_id": job.job_id,
            "status": job.status,
            "total_files": len(job.files),
            "completed_files": sum(r["status"] == "completed" for r in results) if done else 0,
            "failed_files": sum(r["status"] == "failed" for r in results) if done else 0,
            "overall_progress": 100 if done else (0 if job.status == "submitted" else 50),
            "error": job.error,
            "results": job.results if done else None,
        }

    async def _set_faults(self, request: Request) -> Response:
        script = await request.json()
        try:
            self.faults.load(script.get("rules", []))
        except (TypeError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        self.fail_files = list(script.get("fail_files", []))
        self.job_failure = script.get("job_failure")
        self.string_speaker_ids = bool(script.get("string_speaker_ids", False))
        return JSONResponse({"ok": True})

    async def _set_config(self, request: Request) -> Response:
        changes = await request.json()
        unknown = set(changes) - {f.name for f in fields(VachanaFakeConfig)}
        if unknown:
            return JSONResponse({"error": f"unknown keys {sorted(unknown)}"}, status_code=400)
        for key, value in changes.items():
            setattr(self.config, key, value)
        return JSONResponse(asdict(self.config))

    async def _stats(self, request: Request) -> Response:
        return JSONResponse(self.stats())

    async def _reset(self, request: Request) -> Response:
        self.reset()
        return JSONResponse({"ok": True})

    def stats(self) -> dict[str, Any]:
        """Counters and per-job facts (also served at ``GET /__fake__/stats``)."""
        return {
            "jobs_created": self.jobs_created,
            "calls": dict(self.calls),
            "request_ids": [list(pair) for pair in self.request_ids],
            "submit_fields": list(self.submit_fields),
            "status_calls": {k: list(v) for k, v in self.status_calls.items()},
            "status_rejected": {j.job_id: j.rejected_calls for j in self.jobs.values()},
            "faults_pending": self.faults.pending(),
            "jobs": {
                j.job_id: {
                    "status": j.status,
                    "files": [list(f) for f in j.files],
                    "request_id": j.request_id,
                }
                for j in self.jobs.values()
            },
        }


async def _drain(request: Request) -> None:
    """Read the rest of the body: answering before it arrives makes the client see a
    broken pipe instead of the answer."""
    async for _ in request.stream():
        pass


def _error(
    status: int, code: str, message: str, shape: str = "detail", *, retry_after: float | None = None
) -> Response:
    headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else None
    if shape == "text":
        return PlainTextResponse(message, status_code=status, headers=headers)
    bodies: dict[str, Any] = {
        "detail": {"detail": {"error_code": code, "message": message, "status_code": status}},
        "flat": {"error_code": code, "message": message},
        "flat_error": {"error": code, "message": message},
        "rest": {"success": False, "error": {"type": code, "message": message}},
    }
    return JSONResponse(bodies[shape], status_code=status, headers=headers)


def _fault_error(rule: FaultRule) -> Response:
    assert rule.status is not None
    default_code = {
        400: "BAD_REQUEST",
        401: "UNAUTHORIZED",
        403: "FORBIDDEN",
        413: "FILE_TOO_LARGE",
        429: "RATE_LIMITED",
    }
    code = rule.code or default_code.get(rule.status, "SERVICE_UNAVAILABLE")
    shape = rule.shape or ("text" if rule.status == 500 else "detail")
    message = rule.message or ("Internal Server Error" if rule.status == 500 else f"Injected fault {rule.status}")
    return _error(rule.status, code, message, shape, retry_after=rule.retry_after)


class VachanaControl:
    """A client for the fake's control API, for tests that drive it over HTTP."""

    def __init__(self, http: Any, base_url: str) -> None:
        self._http = http
        self._base = base_url.rstrip("/")

    async def faults(self, rules: list[dict[str, Any]] | None = None, **script: Any) -> None:
        r = await self._http.post(f"{self._base}/__fake__/faults", json={"rules": rules or [], **script})
        r.raise_for_status()

    async def config(self, **changes: Any) -> None:
        r = await self._http.post(f"{self._base}/__fake__/config", json=changes)
        r.raise_for_status()

    async def stats(self) -> dict[str, Any]:
        r = await self._http.get(f"{self._base}/__fake__/stats")
        r.raise_for_status()
        return dict(r.json())

    async def reset(self) -> None:
        r = await self._http.post(f"{self._base}/__fake__/reset")
        r.raise_for_status()


def main() -> None:
    from support.server import run_forever

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-key", default=VachanaFakeConfig.api_key)
    parser.add_argument("--poll-interval", type=float, default=VachanaFakeConfig.poll_interval_seconds)
    parser.add_argument("--polls-to-complete", type=int, default=VachanaFakeConfig.polls_to_complete)
    args = parser.parse_args()
    config = VachanaFakeConfig(
        api_key=args.api_key,
        poll_interval_seconds=args.poll_interval,
        polls_to_complete=args.polls_to_complete,
    )
    run_forever(FakeVachana(config).app, args.port)


if __name__ == "__main__":
    main()
