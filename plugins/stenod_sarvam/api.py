"""A thin async client for Sarvam's batch job endpoints and the presigned blob URLs.

Every failure leaves this module as a stenod error (translated here, once). Presigned
URLs are credentials: they are used, never logged, returned in errors or stored.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from stenod.provider import (
    AuthError,
    BatchItem,
    FileUpload,
    Json,
    PermanentError,
    RetryableError,
    error_text,
    file_chunks,
    provider_http_errors,
    retry_after_seconds,
)

from .options import SarvamSettings

NAME = "sarvam"
_SAS_SIGNATURE = re.compile(r"(sig=)[^&\s\"']+", re.IGNORECASE)


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class FileRef(_Body):
    file_name: str
    file_id: str | None = None


class TaskDetail(_Body):
    """One input file of a job as ``job_details[]`` reports it."""

    inputs: list[FileRef] | None = None
    outputs: list[FileRef] | None = None
    state: str | None = None
    error_message: str | None = None
    exception_name: str | None = None


class JobStatus(_Body):
    """``JobStatusResponse`` (answer of start and status)."""

    job_id: str
    job_state: str
    total_files: int | None = 0
    successful_files_count: int | None = 0
    failed_files_count: int | None = 0
    error_message: str | None = ""
    job_details: list[TaskDetail] | None = None


class _InitResponse(_Body):
    job_id: str


class _SignedUrl(_Body):
    file_url: str


class _UploadUrls(_Body):
    upload_urls: dict[str, _SignedUrl]


class _DownloadUrls(_Body):
    download_urls: dict[str, _SignedUrl]


_M = TypeVar("_M", bound=_Body)


def scrub(text: str, secret: str | None) -> str:
    """``text`` without the API key or a SAS signature (error bodies may echo either)."""
    if secret:
        text = text.replace(secret, "***")
    return _SAS_SIGNATURE.sub(r"\1***", text)


def raise_for_status(response: httpx.Response, secret: str | None) -> None:
    """Raise the stenod error for a non-2xx answer of a Sarvam API endpoint.

    403/401 → AuthError; 429 ``insufficient_quota_error`` → PermanentError (credits are
    exhausted, retrying cannot help); other 429, 408 and 5xx → RetryableError honouring
    Retry-After; other 4xx → PermanentError with Sarvam's message and request id.
    """
    if response.is_success:
        return
    status = response.status_code
    code, request_id = _error_fields(response)
    request_id = request_id or response.headers.get("x-request-id")
    detail = scrub(error_text(response), secret)
    suffix = f" (request id {request_id})" if request_id else ""
    if status in (401, 403):
        raise AuthError(
            f"sarvam rejected the API key ({status}: {detail}); check [providers.sarvam] api_key "
            f"or $CREDENTIALS_DIRECTORY/sarvam.api_key{suffix}"
        )
    if status == 429 and code == "insufficient_quota_error":
        raise PermanentError(
            f"sarvam: the account has no credits left ({detail}){suffix}",
            code="sarvam_insufficient_quota",
            hint="Top up the Sarvam account, then submit the files again.",
        )
    if status in (408, 429) or status >= 500:
        raise RetryableError(
            f"sarvam answered {status}: {detail}{suffix}",
            retry_after=retry_after_seconds(response),
            code=f"http_{status}",
        )
    raise PermanentError(f"sarvam refused the request ({status}): {detail}{suffix}", code=f"http_{status}")


def _error_fields(response: httpx.Response) -> tuple[str | None, str | None]:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return None, None
    if not isinstance(error, Mapping):
        return None, None
    code, rid = error.get("code"), error.get("request_id")
    return (code if isinstance(code, str) else None), (rid if isinstance(rid, str) else None)


def _parse(model: type[_M], response: httpx.Response, what: str) -> _M:
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        fields = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)
        )
        # Not chained: the validation error quotes the body, which may carry presigned URLs.
        raise RetryableError(f"sarvam sent a malformed answer to {what}: {fields}", code="malformed_response") from None


class SarvamApi:
    """The batch job endpoints under one path prefix (speech-to-text or -translate)."""

    def __init__(self, http: httpx.AsyncClient, settings: SarvamSettings) -> None:
        self._http = http
        self._base = (settings.base_url or "").rstrip("/")
        self._key = settings.api_key.get_secret_value() if settings.api_key else None
        self._timeout = settings.request_timeout_seconds

    def _headers(self) -> dict[str, str]:
        if not self._key:
            raise AuthError(
                "no API key configured for sarvam: set [providers.sarvam] api_key "
                "or $CREDENTIALS_DIRECTORY/sarvam.api_key"
            )
        return {"api-subscription-key": self._key, "Accept": "application/json"}

    async def _call(self, method: str, path: str, model: type[_M], *, json: Json = None) -> _M:
        headers = self._headers()
        with provider_http_errors(NAME):
            response = await self._http.request(
                method, self._base + path, headers=headers, json=json, timeout=self._timeout
            )
        raise_for_status(response, self._key)
        return _parse(model, response, f"{method} {path}")

    async def create_job(self, prefix: str, parameters: Mapping[str, Json]) -> str:
        """Initiate a job; returns its id."""
        body = await self._call("POST", prefix, _InitResponse, json={"job_parameters": dict(parameters)})
        return body.job_id

    async def upload_urls(self, prefix: str, job_id: str, names: list[str]) -> dict[str, str]:
        """Fresh presigned upload URLs, by file name."""
        body = await self._call("POST", f"{prefix}/upload-files", _UploadUrls, json={"job_id": job_id, "files": names})
        return _pick_urls({k: v.file_url for k, v in body.upload_urls.items()}, names, "upload")

    async def download_urls(self, prefix: str, job_id: str, names: list[str]) -> dict[str, str]:
        """Fresh presigned download URLs for output files, by output name."""
        body = await self._call(
            "POST", f"{prefix}/download-files", _DownloadUrls, json={"job_id": job_id, "files": names}
        )
        return _pick_urls({k: v.file_url for k, v in body.download_urls.items()}, names, "download")

    async def start(self, prefix: str, job_id: str) -> JobStatus:
        return await self._call("POST", f"{prefix}/{job_id}/start", JobStatus)

    async def status(self, prefix: str, job_id: str) -> JobStatus:
        return await self._call("GET", f"{prefix}/{job_id}/status", JobStatus)

    async def put_blob(self, url: str, item: BatchItem, name: str, sent: Callable[[int], None]) -> None:
        """Stream ``item`` to its presigned URL (Azure Put Blob; no Sarvam key on the blob host).

        Raises RetryableError if the URL was refused (expired: the caller asks for fresh
        URLs on the next attempt), PermanentError if the input file changed.
        """
        upload = FileUpload(name, item.size, item.open)
        headers = {"x-ms-blob-type": "BlockBlob", **upload.headers}
        with provider_http_errors("sarvam blob storage"):
            response = await self._http.put(
                url, content=file_chunks(upload, sent=sent), headers=headers, timeout=self._timeout
            )
        _raise_for_blob(response, f"upload of {name}", self._key)

    async def get_blob(self, url: str, name: str) -> bytes:
        """Download one result file from its presigned URL."""
        with provider_http_errors("sarvam blob storage"):
            response = await self._http.get(url, timeout=self._timeout)
        _raise_for_blob(response, f"download of {name}", self._key)
        return response.content


def _pick_urls(urls: dict[str, str], names: list[str], what: str) -> dict[str, str]:
    missing = [n for n in names if n not in urls]
    if missing:
        raise RetryableError(f"sarvam gave no {what} URL for {', '.join(missing)}", code="malformed_response")
    return urls


def _raise_for_blob(response: httpx.Response, what: str, secret: str | None) -> None:
    if response.is_success:
        return
    status = response.status_code
    # The key is never sent to the blob host, but a body quoting it must not reach the
    # journal (the error is recorded with the retry) any more than an API answer's may.
    detail = scrub(error_text(response, limit=200), secret)
    if status in (401, 403, 404, 408, 409, 429) or status >= 500:
        # 403 is what Azure answers for an expired SAS: not a key problem, and a retry
        # requests fresh URLs.
        raise RetryableError(
            f"sarvam blob storage refused the {what} ({status}: {detail})",
            retry_after=retry_after_seconds(response),
            code="sarvam_blob_refused",
        )
    raise PermanentError(f"sarvam blob storage refused the {what} ({status}: {detail})", code=f"http_{status}")
