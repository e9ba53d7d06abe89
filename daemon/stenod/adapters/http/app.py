"""The FastAPI application: every route stenod serves, one error shape, one log line per request."""

from __future__ import annotations

import time

import structlog
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stenod.adapters.http import asr, health, jobs, openai_audio
from stenod.adapters.http.context import HttpContext
from stenod.adapters.http.errors import install_handlers

__all__ = ["create_app"]

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


def create_app(context: HttpContext) -> FastAPI:
    app = FastAPI(
        title="stenod",
        version=context.version,
        summary="Audio and documents to text: OpenAI's audio API, whisper-asr-webservice's /asr, and jobs.",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.stenod = context
    install_handlers(app)
    app.include_router(health.router)
    app.include_router(openai_audio.router)
    app.include_router(asr.router)
    app.include_router(jobs.router)
    app.add_middleware(RequestLog)

    return app
