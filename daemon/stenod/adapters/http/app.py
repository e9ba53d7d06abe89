"""The FastAPI application: every route stenod serves, one error shape, one log line per request."""

from __future__ import annotations

import time
from typing import Any

import structlog
from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stenod.adapters.http import asr, health, jobs, openai_audio, page, speakers
from stenod.adapters.http.context import HttpContext, require_key
from stenod.adapters.http.errors import install_handlers
from stenod.adapters.http.front_door import FrontDoor, HostNames
from stenod.adapters.http.page.errors import install_page_handlers
from stenod.intake.request_message import Request as StenodRequest

__all__ = ["create_app", "openapi_document"]

log = structlog.get_logger("stenod.http")


class RequestLog:
    """One log line per request (plain ASGI: streamed bodies and answers pass untouched).
    Never headers (they carry the key) nor query strings."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 0

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            client = scope.get("client")
            log.info(
                "http.request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                ms=round(1000 * (time.monotonic() - started), 1),
                client=client[0] if client else None,
            )


_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
_ERRORS = {
    "400": "the request or its file cannot be used",
    "401": "no API key, or a wrong one",
    "403": "sent from another site's page",
    "404": "no such job or route",
    "409": "the job was cancelled",
    "413": "the body is over its limit ([http] max_upload_bytes for uploads)",
    "415": "the body is not of a type this route takes",
    "421": "a Host this server does not answer to ([http] allowed_hosts)",
    "429": "too many wrong keys from this address; wait Retry-After seconds",
    "500": "stenod failed",
    "502": "the provider failed",
    "503": "stenod is stopping, or the provider is unavailable",
    "504": "the job takes longer than [http] sync_timeout_seconds",
}
_OPEN = {"/healthz", "/metrics"}


def _document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's OpenAPI document, with the answers stenod really gives: OpenAI's error object
    (never FastAPI's 422 ``{"detail"}``) and Bearer keys."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    document = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas["Error"] = _ERROR_SCHEMA
    request = StenodRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(request.pop("$defs", {}))
    schemas["StenodRequest"] = request  # the queue's request body, also POST /v1/jobs's
    components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    for path, operations in document.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            for status, text in _ERRORS.items():
                responses.setdefault(status, {"description": text, **error})
            if path not in _OPEN:
                operation["security"] = [{"bearer": []}]
    app.openapi_schema = document
    return document


def _install_docs(app: FastAPI) -> None:
    """``/openapi.json`` and ``/docs`` list every route: with keys set, they need one too."""

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(require_key)])
    async def openapi_document() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=[Depends(require_key)])
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="stenod")


def _routed(version: str) -> FastAPI:
    """Every route, its error handlers and its document: the app before it meets a daemon."""
    app = FastAPI(
        title="stenod",
        version=version,
        summary="Audio and documents to text: OpenAI's audio API, whisper-asr-webservice's /asr, and jobs.",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    install_handlers(app)
    app.include_router(health.router)
    app.include_router(openai_audio.router)
    app.include_router(asr.router)
    app.include_router(jobs.router)
    app.include_router(speakers.router)
    app.include_router(page.router)
    app.mount("/ui/static", page.static, name="static")
    install_page_handlers(app)
    _install_docs(app)
    app.openapi = lambda: _document(app)  # type: ignore[method-assign]
    return app


def create_app(context: HttpContext, *, hosts: HostNames, json_bytes: int) -> FastAPI:
    """The app behind its front door; ``json_bytes`` caps ``POST /v1/jobs``'s JSON body."""
    app = _routed(context.version)
    app.state.stenod = context
    app.add_middleware(FrontDoor, hosts=hosts, json_bytes=json_bytes)
    app.add_middleware(RequestLog)  # the outermost: front-door refusals are logged too
    return app


def openapi_document(version: str) -> dict[str, Any]:
    """The document ``/openapi.json`` serves, made without a daemon (the docs site renders it)."""
    return _routed(version).openapi()
