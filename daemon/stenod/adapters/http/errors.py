"""Errors as clients expect them: OpenAI's error object on every route, with its status codes.

``{"error": {"message", "type", "param", "code"}}``: 400 ``invalid_request_error`` for a bad
request or an unusable file, 401 for a missing or wrong key, 404 for an unknown route or
job, 413 for an upload over the limit, 5xx ``server_error`` when stenod or a provider
failed. FastAPI's own ``{"detail"}`` bodies and 422s never reach a client.
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from stenod.errors import ErrorInfo, StenodError

__all__ = ["ApiError", "for_failure", "install_handlers"]

INVALID = "invalid_request_error"
SERVER = "server_error"

# A job that failed for one of these reasons failed because of what the client sent.
_CLIENT_CODES = frozenset(
    {
        "empty_file",
        "not_audio",
        "corrupt_audio",
        "no_audio_stream",
        "unsupported_codec",
        "unsupported_format",
        "unsupported_language",
        "unsupported_task",
        "invalid_options",
        "over_limit",
        "too_long",
        "input_changed",
    }
)


class ApiError(StenodError):
    """An answer other than success, in OpenAI's error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = INVALID,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, str | None]:
        """The inner error object (also what a stream's error event carries)."""
        return {"message": self.message, "type": self.type, "param": self.param, "code": self.code}

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.body()}, status_code=self.status, headers=self.headers)


def for_failure(error: ErrorInfo | None, *, cancelled: bool = False) -> ApiError:
    """The HTTP answer for a job that ended without a transcript."""
    if cancelled:
        return ApiError(409, "the job was cancelled before it finished", code="cancelled")
    if error is None:
        return ApiError(500, "the job failed without saying why", type=SERVER)
    message = error.message + (f" What to do: {error.hint}" if error.hint else "")
    if error.code in _CLIENT_CODES:
        return ApiError(400, message, param="file", code=error.code)
    if error.code == "internal_error":
        return ApiError(500, message, type=SERVER, code=error.code)
    if error.code in ("provider_unavailable", "unknown_provider", "shutdown"):
        return ApiError(503, message, type=SERVER, code=error.code, headers={"Retry-After": "30"})
    return ApiError(502, message, type=SERVER, code=error.code)  # the provider failed or was unreachable


def install_handlers(app: FastAPI) -> None:
    """Every error leaves in OpenAI's shape."""

    async def api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return exc.response()

    async def validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        where = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
        param = ".".join(where) or None
        message = f"{param}: {first.get('msg', 'invalid')}" if param else str(first.get("msg", "invalid request"))
        return ApiError(400, message, param=param).response()

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        status = exc.status_code
        text = {404: "no such route", 405: "method not allowed"}.get(status, str(exc.detail))
        return ApiError(status, text, type=INVALID if status < 500 else SERVER, headers=exc.headers).response()

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(StarletteHTTPException, http_error)
