"""A thin async client for Vachana's batch submit/status API; errors leave it as stenod errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from stenod.provider import (
    AuthError,
    MultipartBody,
    PermanentError,
    RetryableError,
    error_text,
    provider_http_errors,
    retry_after_seconds,
)

from .options import VachanaSettings

NAME = "vachana"


class UncertainSubmit(RetryableError):
    """The whole submit body was sent but no usable answer came back: the job may exist."""


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class SegmentBody(_Body):
    start_time: float
    end_time: float
    text: str = ""
    speaker_id: str | None = None
    confidence: float | None = None
    language_detected: str | None = None
    sentiment: str | None = None
    emotion: str | None = None

    @field_validator("speaker_id", mode="before")
    @classmethod
    def _as_text(cls, value: object) -> object:
        # Documented as an integer; some clients see a string.
        return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


class FileResult(_Body):
    filename: str
    status: str | None = None
    error: str | None = None
    full_transcript: str | None = None
    total_duration: float | None = None
    segments: list[SegmentBody] | None = None


class JobStatus(_Body):
    job_id: str
    status: str
    total_files: int | None = None
    completed_files: int | None = None
    failed_files: int | None = None
    overall_progress: float | None = None
    error: str | None = None
    results: list[FileResult] | None = None


class _Submitted(_Body):
    job_id: str


def raise_for_status(response: httpx.Response, secret: str | None, request_id: str) -> None:
    """Raise the stenod error for a non-2xx answer, whatever body shape Vachana chose.

    401/403 → AuthError; 429, 408 and 5xx → RetryableError honouring Retry-After;
    404 and other 4xx → PermanentError with Vachana's message and our request id.
    """
    if response.is_success:
        return
    status = response.status_code
    detail = error_text(response)
    if secret:
        detail = detail.replace(secret, "***")
    suffix = f" (X-API-Request-ID {request_id})"
    if status in (401, 403):
        raise AuthError(
            f"vachana rejected the API key ({status}: {detail}); check [providers.vachana] api_key "
            f"or $CREDENTIALS_DIRECTORY/vachana.api_key{suffix}"
        )
    if status in (408, 429) or status >= 500:
        raise RetryableError(
            f"vachana answered {status}: {detail}{suffix}",
            retry_after=retry_after_seconds(response),
            code=f"http_{status}",
        )
    raise PermanentError(f"vachana refused the request ({status}): {detail}{suffix}", code=f"http_{status}")


_M = TypeVar("_M", bound=_Body)


def _parse(model: type[_M], response: httpx.Response, what: str) -> _M:
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        fields = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)
        )
        raise RetryableError(f"vachana sent a malformed answer to {what}: {fields}", code="malformed_response") from exc


class VachanaApi:
    def __init__(self, http: httpx.AsyncClient, settings: VachanaSettings) -> None:
        self._http = http
        self._base = (settings.base_url or "").rstrip("/")
        self._key = settings.api_key.get_secret_value() if settings.api_key else None
        self._timeout = settings.request_timeout_seconds

    def _headers(self, request_id: str) -> dict[str, str]:
        if not self._key:
            raise AuthError(
                "no API key configured for vachana: set [providers.vachana] api_key "
                "or $CREDENTIALS_DIRECTORY/vachana.api_key"
            )
        return {"X-API-Key-ID": self._key, "X-API-Request-ID": request_id, "Accept": "application/json"}

    async def submit(
        self,
        body: MultipartBody,
        request_id: str,
        *,
        body_sent: Callable[[], Awaitable[None]],
        sent: Callable[[int], None],
    ) -> str:
        """POST the multipart body; returns the job id.

        Raises UncertainSubmit when the body was sent in full and then the answer was
        lost, cut short, unreadable or a 5xx (the job may exist). Any other error means
        Vachana did not take the job.
        """
        complete = False

        async def mark_complete() -> None:
            nonlocal complete
            await body_sent()
            complete = True

        headers = {**self._headers(request_id), **body.headers}
        try:
            with provider_http_errors(NAME):
                response = await self._http.post(
                    f"{self._base}/stt/v3/batch/submit",
                    content=body.stream(before_end=mark_complete, sent=sent),
                    headers=headers,
                    timeout=self._timeout,
                )
            raise_for_status(response, self._key, request_id)
            return _parse(_Submitted, response, "submit").job_id
        except RetryableError as exc:
            refused = isinstance(exc.code, str) and exc.code in ("http_429", "http_408")
            if complete and not refused:
                raise UncertainSubmit(
                    exc.message, retry_after=exc.retry_after, code="vachana_submit_uncertain"
                ) from exc
            raise

    async def status(self, job_id: str, request_id: str) -> JobStatus:
        headers = self._headers(request_id)
        with provider_http_errors(NAME):
            response = await self._http.get(
                f"{self._base}/stt/v3/batch/status/{job_id}", headers=headers, timeout=self._timeout
            )
        if response.status_code == 404:
            raise PermanentError(
                f"vachana no longer knows job {job_id} (404: {error_text(response)}); it may have expired",
                code="vachana_job_gone",
            )
        raise_for_status(response, self._key, request_id)
        return _parse(JobStatus, response, "status")
