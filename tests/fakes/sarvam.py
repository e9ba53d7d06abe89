"""A faithful fake of Sarvam AI's batch speech-to-text job API (shared/providers/sarvam.md).

Both job kinds (``/speech-to-text/job/v1`` and ``/speech-to-text-translate/job/v1``):
initiate → upload-files (presigned URLs into a fake Azure blob store served by this
same app, with SAS-like, expiring, HMAC-signed query tokens) → PUT (``x-ms-blob-type:
BlockBlob``, no API key) → start → status (``Accepted → Pending → Running →
Completed | Failed``) → download-files (POST only; GET is 405) → GET the result JSON.
Transcripts are deterministic, derived from the file name and size.

Control API: ``POST /__fake__/faults`` (see :mod:`tests.fakes.faultscript`; routes are
``init``, ``upload_files``, ``blob_put``, ``start``, ``status``, ``download_files``,
``blob_get``; the script may also set ``fail_files`` (globs on input names: those files
fail), ``partial_state`` (report ``PartiallyCompleted`` instead of ``Completed`` when
some files failed) and ``job_failure`` (the whole job fails with this message)), ``POST /__fake__/config``,
``GET /__fake__/stats``, ``POST /__fake__/reset``.
Run alone with ``python -m tests.fakes.sarvam --port N``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fnmatch
import json
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.faultscript import FaultRule, FaultScript, generic_fault
from tests.fakes.sarvam_blobs import SasSigner, azure_error, receive_put_blob
from tests.fakes.sarvam_content import parameter_problem, result_document

PREFIXES = {"stt": "/speech-to-text/job/v1", "translate": "/speech-to-text-translate/job/v1"}
_CONTAINER = "sarvam-batch"


@dataclass
class SarvamFakeConfig:
    api_key: str = "test-sarvam-key"
    polls_to_complete: int = 2  # status calls after start until the job is finished
    seconds_to_complete: float | None = None  # if set, finish by time instead of polls
    upload_url_ttl_seconds: float = 3600.0
    download_url_ttl_seconds: float = 7 * 24 * 3600.0
    max_files: int = 20


@dataclass
class _Job:
    job_id: str
    kind: str
    parameters: dict[str, Any]
    created_at: str
    state: str = "Accepted"
    requested: list[str] = field(default_factory=list)
    uploads: dict[str, int] = field(default_factory=dict)  # name -> size
    starts: int = 0
    started_at: float | None = None
    polls: int = 0
    updated_at: str = ""
    details: list[dict[str, Any]] | None = None
    outputs: dict[str, bytes] = field(default_factory=dict)
    error_message: str = ""


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _request_id() -> str:
    return f"{dt.datetime.now(dt.UTC):%Y%m%d}_{uuid.uuid4()}"


class FakeSarvam:
    """The fake's state and its Starlette app (``.app``)."""

    def __init__(self, config: SarvamFakeConfig | None = None) -> None:
        self._initial = config or SarvamFakeConfig()
        self._sas = SasSigner()
        self.reset()
        prefix_routes = [
            route
            for kind, prefix in PREFIXES.items()
            for route in (
                Route(prefix, self._endpoint(self._init, kind), methods=["POST"]),
                Route(f"{prefix}/upload-files", self._endpoint(self._upload_files, kind), methods=["POST"]),
                Route(f"{prefix}/download-files", self._endpoint(self._download_files, kind), methods=["POST"]),
                Route(f"{prefix}/{{job_id}}/start", self._endpoint(self._start, kind), methods=["POST"]),
                Route(f"{prefix}/{{job_id}}/status", self._endpoint(self._status, kind), methods=["GET"]),
            )
        ]
        self.app = Starlette(
            routes=[
                *prefix_routes,
                Route(
                    "/__blob__/{container}/{job_id}/{direction}/{name:path}",
                    self._blob,
                    methods=["PUT", "GET"],
                ),
                Route("/__fake__/faults", self._set_faults, methods=["POST"]),
                Route("/__fake__/config", self._set_config, methods=["POST"]),
                Route("/__fake__/stats", self._stats, methods=["GET"]),
                Route("/__fake__/reset", self._reset, methods=["POST"]),
            ]
        )

    def reset(self) -> None:
        self.config = SarvamFakeConfig(**asdict(self._initial))
        self.faults = FaultScript()
        self.fail_files: list[str] = []
        self.partial_state = False
        self.job_failure: str | None = None
        self.jobs: dict[str, _Job] = {}
        self.counters: dict[str, int] = {
            "jobs_created": 0, "jobs_started": 0, "start_calls": 0, "uploads": 0, "upload_bytes": 0,
            "downloads": 0, "blob_requests_with_api_key": 0,
        }  # fmt: skip
        self.calls: dict[str, int] = {}
        self.status_calls: dict[str, list[float]] = {}

    # ----------------------------------------------------------------- plumbing

    def _endpoint(self, handler: Any, kind: str) -> Any:
        route = handler.__name__.lstrip("_")

        async def endpoint(request: Request) -> Response:
            self.calls[route] = self.calls.get(route, 0) + 1
            if route == "status":  # every arrival, also those answered with a fault
                self.status_calls.setdefault(request.path_params["job_id"], []).append(time.time())
            rid = _request_id()
            if request.headers.get("api-subscription-key") != self.config.api_key:
                return _error(403, "invalid_api_key_error", "Invalid API key or subscription key", rid)
            rule = self.faults.next(route, request.path_params.get("job_id"))
            if (early := await generic_fault(rule)) is not None:
                return early
            if rule is not None and rule.status is not None:
                return _fault_error(rule, rid)
            response: Response = await handler(request, kind, rid, rule)
            response.headers["x-request-id"] = rid
            return response

        return endpoint

    async def _json_body(self, request: Request, rid: str) -> dict[str, Any] | Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(422, "unprocessable_entity_error", "body : Input should be a valid JSON object", rid)
        if not isinstance(body, dict):
            return _error(422, "unprocessable_entity_error", "body : Input should be a valid dictionary", rid)
        return body

    def _job(self, job_id: str | None, kind: str, rid: str) -> _Job | Response:
        job = self.jobs.get(job_id or "")
        if job is None or job.kind != kind:
            return _error(404, "not_found_error", f"Job {job_id} not found", rid)
        return job

    def _blob_url(self, request: Request, job: _Job, direction: str, name: str, perms: str, ttl: float) -> str:
        path = f"/__blob__/{_CONTAINER}/{job.job_id}/{direction}/{quote(name)}"
        return self._sas.url(str(request.base_url), path, perms, ttl)

    # ----------------------------------------------------------------- job API

    async def _init(self, request: Request, kind: str, rid: str, rule: FaultRule | None) -> Response:
        body = await self._json_body(request, rid)
        if isinstance(body, Response):
            return body
        params = body.get("job_parameters")
        if not isinstance(params, dict):
            return _error(422, "unprocessable_entity_error", "body.job_parameters : Field required", rid)
        problem = parameter_problem(kind, params)
        if problem:
            return _error(422, "unprocessable_entity_error", problem, rid)
        job_id = f"{dt.datetime.now(dt.UTC):%Y%m%d}_{uuid.uuid4()}"
        clean = {k: v for k, v in params.items() if v is not None}
        self.jobs[job_id] = _Job(job_id, kind, clean, created_at=_now_iso(), updated_at=_now_iso())
        self.counters["jobs_created"] += 1
        answer = {
            "job_id": job_id,
            "storage_container_type": "Azure",
            "job_parameters": clean,
            "job_state": "Accepted",
        }
        return JSONResponse(answer, status_code=202)

    async def _upload_files(self, request: Request, kind: str, rid: str, rule: FaultRule | None) -> Response:
        body = await self._json_body(request, rid)
        if isinstance(body, Response):
            return body
        files = body.get("files")
        if "job_id" not in body:
            return _error(422, "unprocessable_entity_error", "body.job_id : Field required", rid)
        if not isinstance(files, list) or not files or not all(isinstance(f, str) and f for f in files):
            return _error(422, "unprocessable_entity_error", "body.files : Input should be a list of names", rid)
        job = self._job(body["job_id"], kind, rid)
        if isinstance(job, Response):
            return job
        if job.state != "Accepted":
            return _error(400, "invalid_request_error", f"Job is in state {job.state}; uploads are closed", rid)
        bad = [f for f in files if "/" in f or "\\" in f or f in (".", "..")]
        if bad:
            return _error(400, "invalid_request_error", f"Invalid file names: {bad}", rid)
        names = list(dict.fromkeys([*job.requested, *files]))
        if len(names) > self.config.max_files:
            return _error(400, "invalid_request_error", f"A job takes at most {self.config.max_files} files", rid)
        job.requested = names
        ttl = -60.0 if rule is not None and rule.expired_urls else self.config.upload_url_ttl_seconds
        urls = {
            name: {"file_url": self._blob_url(request, job, "inputs", name, "cw", ttl), "file_metadata": None}
            for name in files
        }
        answer = {
            "job_id": job.job_id,
            "job_state": job.state,
            "upload_urls": urls,
            "storage_container_type": "Azure",
        }
        return JSONResponse(answer)

    async def _start(self, request: Request, kind: str, rid: str, rule: FaultRule | None) -> Response:
        job = self._job(request.path_params["job_id"], kind, rid)
        if isinstance(job, Response):
            return job
        self.counters["start_calls"] += 1
        if job.state != "Accepted":
            return _error(400, "invalid_request_error", f"Job {job.job_id} has already been started", rid)
        if not job.uploads:
            return _error(400, "invalid_request_error", "No files have been uploaded for this job", rid)
        job.state, job.started_at, job.starts, job.updated_at = "Pending", time.monotonic(), 1, _now_iso()
        self.counters["jobs_started"] += 1
        return JSONResponse(self._status_body(job))

    async def _status(self, request: Request, kind: str, rid: str, rule: FaultRule | None) -> Response:
        job = self._job(request.path_params["job_id"], kind, rid)
        if isinstance(job, Response):
            return job
        self._advance(job)
        return JSONResponse(self._status_body(job))

    async def _download_files(self, request: Request, kind: str, rid: str, rule: FaultRule | None) -> Response:
        body = await self._json_body(request, rid)
        if isinstance(body, Response):
            return body
        if "job_id" not in body:
            return _error(422, "unprocessable_entity_error", "body.job_id : Field required", rid)
        job = self._job(body["job_id"], kind, rid)
        if isinstance(job, Response):
            return job
        files = body.get("files")
        if not isinstance(files, list) or not files:
            return _error(422, "unprocessable_entity_error", "body.files : Input should be a list of names", rid)
        unknown = [f for f in files if f not in job.outputs]
        if unknown:
            return _error(400, "invalid_request_error", f"Files not found in job outputs: {unknown}", rid)
        ttl = -60.0 if rule is not None and rule.expired_urls else self.config.download_url_ttl_seconds
        urls = {
            name: {"file_url": self._blob_url(request, job, "outputs", name, "r", ttl), "file_metadata": None}
            for name in files
        }
        answer = {
            "job_id": job.job_id,
            "job_state": job.state,
            "download_urls": urls,
            "storage_container_type": "Azure",
        }
        return JSONResponse(answer)

    def _advance(self, job: _Job) -> None:
        if job.state not in ("Pending", "Running"):
            return
        job.polls += 1
        assert job.started_at is not None
        if self.config.seconds_to_complete is not None:
            finished = time.monotonic() - job.started_at >= self.config.seconds_to_complete
        else:
            finished = job.polls >= self.config.polls_to_complete
        if finished:
            self._complete(job)
        else:
            job.state = "Running"
        job.updated_at = _now_iso()

    def _complete(self, job: _Job) -> None:
        if self.job_failure is not None:
            job.state, job.error_message = "Failed", self.job_failure
            return
        details: list[dict[str, Any]] = []
        for index, name in enumerate(job.requested):
            detail: dict[str, Any] = {
                "inputs": [{"file_name": name, "file_id": str(index)}],
                "outputs": [],
                "state": "Success",
                "error_message": None,
                "exception_name": None,
            }
            if name not in job.uploads:
                detail |= {"state": "API Error", "error_message": "Input file not found in storage"}
            elif any(fnmatch.fnmatch(name, pattern) for pattern in self.fail_files):
                detail |= {
                    "state": "API Error",
                    "error_message": "Audio could not be decoded",
                    "exception_name": "AudioDecodeError",
                }
            else:
                output = f"{index}.json"
                detail["outputs"] = [{"file_name": output, "file_id": str(index)}]
                job.outputs[output] = json.dumps(
                    result_document(name, job.uploads[name], job.kind, job.parameters)
                ).encode()
            details.append(detail)
        job.details = details
        ok = sum(d["state"] == "Success" for d in details)
        if ok == len(details):
            job.state = "Completed"
        elif ok == 0:
            job.state, job.error_message = "Failed", "All files failed"
        else:
            job.state = "PartiallyCompleted" if self.partial_state else "Completed"

    def _status_body(self, job: _Job) -> dict[str, Any]:
        details = job.details
        return {
            "job_id": job.job_id,
            "job_state": job.state,
            "created_at": job.created_at,
            "updated_at": job.updated_at,
            "storage_container_type": "Azure",
            "total_files": len(job.requested),
            "successful_files_count": sum(d["state"] == "Success" for d in details or ()),
            "failed_files_count": sum(d["state"] != "Success" for d in details or ()),
            "error_message": job.error_message,
            "job_details": details,
        }

    # ----------------------------------------------------------------- blob store

    async def _blob(self, request: Request) -> Response:
        p = request.path_params
        route = "blob_put" if request.method == "PUT" else "blob_get"
        self.calls[route] = self.calls.get(route, 0) + 1
        if "api-subscription-key" in request.headers:
            self.counters["blob_requests_with_api_key"] += 1
        rule = self.faults.next(route, p["name"])
        if rule is not None:
            async for _ in request.stream():  # answer after the upload, as Azure does
                pass
        if (early := await generic_fault(rule)) is not None:
            return early
        if rule is not None and rule.status is not None:
            return azure_error(rule.status, rule.code or "ServerBusy", rule.message or "Injected fault")
        path = f"/__blob__/{p['container']}/{p['job_id']}/{p['direction']}/{quote(p['name'])}"
        denied = self._sas.refusal(request, path, "w" if request.method == "PUT" else "r")
        if denied is not None:
            return denied
        job = self.jobs.get(p["job_id"])
        if job is None:
            return azure_error(404, "ContainerNotFound", "The specified container does not exist.")
        if request.method == "PUT":
            if p["direction"] != "inputs" or p["name"] not in job.requested:
                return azure_error(403, "AuthorizationFailure", "This request is not authorized.")
            size, answer = await receive_put_blob(request)
            if size >= 0:
                job.uploads[p["name"]] = size
                self.counters["uploads"] += 1
                self.counters["upload_bytes"] += size
            return answer
        data = job.outputs.get(p["name"]) if p["direction"] == "outputs" else None
        if data is None:
            return azure_error(404, "BlobNotFound", "The specified blob does not exist.")
        self.counters["downloads"] += 1
        return Response(data, media_type="application/json", headers={"x-ms-blob-type": "BlockBlob"})

    # ----------------------------------------------------------------- control API

    async def _set_faults(self, request: Request) -> Response:
        script = await request.json()
        try:
            self.faults.load(script.get("rules", []))
        except (TypeError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        self.fail_files = list(script.get("fail_files", []))
        self.partial_state = bool(script.get("partial_state", False))
        self.job_failure = script.get("job_failure")
        return JSONResponse({"ok": True})

    async def _set_config(self, request: Request) -> Response:
        changes = await request.json()
        known = {f.name for f in fields(SarvamFakeConfig)}
        if set(changes) - known:
            return JSONResponse({"error": f"unknown keys {sorted(set(changes) - known)}"}, status_code=400)
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
            **self.counters,
            "calls": dict(self.calls),
            "status_calls": {k: list(v) for k, v in self.status_calls.items()},
            "faults_pending": self.faults.pending(),
            "jobs": {
                j.job_id: {
                    "kind": j.kind,
                    "state": j.state,
                    "parameters": j.parameters,
                    "requested": j.requested,
                    "uploads": j.uploads,
                    "starts": j.starts,
                }
                for j in self.jobs.values()
            },
        }


def _error(status: int, code: str, message: str, rid: str, headers: dict[str, str] | None = None) -> Response:
    body = {"error": {"message": message, "code": code, "request_id": rid}}
    return JSONResponse(body, status_code=status, headers={"x-request-id": rid, **(headers or {})})


def _fault_error(rule: FaultRule, rid: str) -> Response:
    assert rule.status is not None
    default_code = {
        400: "invalid_request_error", 403: "invalid_api_key_error", 404: "not_found_error",
        422: "unprocessable_entity_error", 429: "rate_limit_exceeded_error", 503: "internal_server_error",
        504: "gateway_timeout_error",
    }.get(rule.status, "internal_server_error")  # fmt: skip
    headers = {"Retry-After": f"{rule.retry_after:g}"} if rule.retry_after is not None else None
    message = rule.message or f"Injected fault {rule.status}"
    return _error(rule.status, rule.code or default_code, message, rid, headers)


class SarvamControl:
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
    parser.add_argument("--api-key", default=SarvamFakeConfig.api_key)
    parser.add_argument("--polls-to-complete", type=int, default=SarvamFakeConfig.polls_to_complete)
    args = parser.parse_args()
    config = SarvamFakeConfig(api_key=args.api_key, polls_to_complete=args.polls_to_complete)
    run_forever(FakeSarvam(config).app, args.port)


if __name__ == "__main__":
    main()
