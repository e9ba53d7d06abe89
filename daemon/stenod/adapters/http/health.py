"""``GET /healthz`` (the daemon's checks as JSON; 200 when all pass, 503 otherwise) and
``GET /metrics`` (Prometheus). No key: a monitor has none, and neither route reveals a job."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client.exposition import choose_encoder

from stenod.adapters.http.context import Check, Ctx

__all__ = ["router"]

log = structlog.get_logger("stenod.http")

router = APIRouter(tags=["Health"])

_CHECK_SECONDS = 2.0


async def _run(name: str, check: Check, into: dict[str, dict[str, Any]]) -> None:
    try:
        async with asyncio.timeout(_CHECK_SECONDS):
            result = await check()
        into[name] = {**result, "ok": bool(result.get("ok"))} if isinstance(result, Mapping) else {"ok": bool(result)}
    except TimeoutError:
        into[name] = {"ok": False, "error": f"no answer within {_CHECK_SECONDS:g}s"}
    except Exception as exc:  # a crashing check means unhealthy; the report must still be served
        log.warning("health.check_error", check=name, exc_info=True)
        into[name] = {"ok": False, "error": type(exc).__name__}


@router.get("/healthz", summary="The daemon's health checks")
async def healthz(ctx: Ctx) -> JSONResponse:
    results: dict[str, dict[str, Any]] = {}
    async with asyncio.TaskGroup() as tg:
        for name, check in list(ctx.checks.items()):
            tg.create_task(_run(name, check, results), name=f"health:{name}")
    healthy = all(r["ok"] for r in results.values())
    return JSONResponse(
        {"ok": healthy, "checks": dict(sorted(results.items()))},
        status_code=200 if healthy else 503,
        headers={"Cache-Control": "no-store"},
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}, "application/openmetrics-text": {}}}},
)
async def metrics(request: Request, ctx: Ctx) -> Response:
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encoder(ctx.registry), media_type=content_type, headers={"Cache-Control": "no-store"})
