"""The health and metrics listener, over real loopback TCP connections."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from stenod.adapters.health_http import Check, HealthServer, LoopLagMonitor, parse_listen
from stenod.errors import ConfigError
from stenod.metrics import Metrics


@dataclass
class Served:
    """A running HealthServer and an httpx client pointed at it."""

    http: httpx.AsyncClient
    address: tuple[str, int]


ServeFactory = Callable[..., AbstractAsyncContextManager[Served]]


class Flag:
    """A health check the test can flip, like a broker connection coming and going."""

    def __init__(self, value: bool = True) -> None:
        self.value = value

    async def __call__(self) -> bool:
        return self.value


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def serve(metrics: Metrics) -> ServeFactory:
    """Start a HealthServer on an ephemeral loopback port; yields an httpx client pointed at it."""

    @asynccontextmanager
    async def factory(checks: Mapping[str, Check] | None = None, **options: Any) -> AsyncIterator[Served]:
        checks = {"loop": Flag()} if checks is None else checks
        server = HealthServer("127.0.0.1:0", checks, metrics.registry, **options)
        host, port = await server.start()
        try:
            async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=10) as http:
                yield Served(http, (host, port))
        finally:
            await server.aclose()

    return factory


async def raw(served: Served, data: bytes, *, close_write: bool = True) -> bytes:
    """Send raw bytes and read until the server closes the connection."""
    reader, writer = await asyncio.open_connection(*served.address)
    try:
        writer.write(data)
        await writer.drain()
        if close_write:
            writer.write_eof()
        return await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()


def sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return None


async def test_healthz_is_200_with_every_check_when_all_pass(serve: ServeFactory) -> None:
    async with serve({"journal": Flag(), "broker": Flag()}) as served:
        response = await served.http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"ok": True, "checks": {"broker": {"ok": True}, "journal": {"ok": True}}}


async def test_healthz_turns_503_when_the_broker_goes_away_and_200_when_it_returns(
    serve: ServeFactory,
) -> None:
    broker = Flag()
    async with serve({"journal": Flag(), "broker": broker}) as served:
        before = await served.http.get("/healthz")
        broker.value = False
        during = await served.http.get("/healthz")
        broker.value = True
        after = await served.http.get("/healthz")
    assert [before.status_code, during.status_code, after.status_code] == [200, 503, 200]
    assert during.json()["checks"]["broker"] == {"ok": False}
    assert during.json()["checks"]["journal"] == {"ok": True}


async def test_checks_added_after_start_are_served(serve: ServeFactory) -> None:
    checks: dict[str, Check] = {"journal": Flag()}
    async with serve(checks) as served:
        checks["broker"] = Flag(False)
        response = await served.http.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["broker"] == {"ok": False}


async def test_a_check_that_does_not_answer_is_unhealthy(serve: ServeFactory) -> None:
    async def hangs() -> bool:
        await asyncio.Event().wait()
        return True

    async with serve({"journal": hangs}, check_timeout=0.2) as served:
        response = await served.http.get("/healthz")
    assert response.status_code == 503
    assert "no answer" in response.json()["checks"]["journal"]["error"]


async def test_a_check_that_raises_is_unhealthy(serve: ServeFactory) -> None:
    async def broken() -> bool:
        raise RuntimeError("journal is gone")

    with capture_logs():
        async with serve({"journal": broken}) as served:
            response = await served.http.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["journal"] == {"ok": False, "error": "RuntimeError"}


async def test_metrics_values_move_as_jobs_run(serve: ServeFactory, metrics: Metrics) -> None:
    async with serve() as served:
        metrics.job_state("whisper", "accepted")
        first = await served.http.get("/metrics")
        metrics.job_state("whisper", "accepted")
        metrics.job_state("whisper", "succeeded")
        second = await served.http.get("/metrics")
    assert first.status_code == 200
    assert first.headers["content-type"].startswith("text/plain")
    assert sample(first.text, "stenod_jobs_total", provider="whisper", state="accepted") == 1
    assert sample(second.text, "stenod_jobs_total", provider="whisper", state="accepted") == 2
    assert sample(second.text, "stenod_jobs_total", provider="whisper", state="succeeded") == 1


async def test_metrics_speak_openmetrics_when_asked(serve: ServeFactory) -> None:
    async with serve() as served:
        response = await served.http.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")


async def test_unknown_path_is_404(serve: ServeFactory) -> None:
    async with serve() as served:
        response = await served.http.get("/admin")
    assert response.status_code == 404


async def test_other_methods_are_405_with_allow(serve: ServeFactory) -> None:
    async with serve() as served:
        response = await served.http.post("/healthz", content=b"x")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"


async def test_head_answers_without_a_body(serve: ServeFactory) -> None:
    async with serve() as served:
        response = await served.http.head("/healthz")
    assert response.status_code == 200
    assert response.content == b""
    assert int(response.headers["content-length"]) > 0


@pytest.mark.parametrize(
    ("request_bytes", "status_line"),
    [
        (b"\x00\xff\xfe garbage \x01\r\n\r\n", b"HTTP/1.1 400 "),
        (b"GET /healthz HTTP/2.0\r\n\r\n", b"HTTP/1.1 400 "),
        (b"GET\r\n\r\n", b"HTTP/1.1 400 "),
        (b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n", b"HTTP/1.1 431 "),
        (b"", b""),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n", b""),  # closed before the head ended
    ],
    ids=["binary", "http2", "no-target", "huge-header", "empty", "truncated"],
)
async def test_garbage_is_refused_and_the_server_keeps_serving(
    serve: ServeFactory, request_bytes: bytes, status_line: bytes
) -> None:
    async with serve() as served:
        answer = await raw(served, request_bytes)
        still = await served.http.get("/healthz")
    assert answer.startswith(status_line)
    assert still.status_code == 200


async def test_a_client_that_sends_nothing_gets_408_and_is_disconnected(serve: ServeFactory) -> None:
    async with serve(request_timeout=0.3) as served:
        answer = await raw(served, b"GET /healthz HTTP/1.1\r\n", close_write=False)
        still = await served.http.get("/healthz")
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert still.status_code == 200


async def test_connections_beyond_the_limit_are_closed_at_once(serve: ServeFactory) -> None:
    async with serve(max_connections=2) as served:
        idle = [await asyncio.open_connection(*served.address) for _ in range(2)]
        await asyncio.sleep(0.1)  # let the server accept both
        reader, writer = await asyncio.open_connection(*served.address)
        extra = await asyncio.wait_for(reader.read(), timeout=10)
        for _, idle_writer in [*idle, (reader, writer)]:
            idle_writer.close()
    assert extra == b""


async def test_run_stops_listening_and_drops_idle_connections_when_stopping(metrics: Metrics) -> None:
    server = HealthServer("127.0.0.1:0", {"loop": Flag()}, metrics.registry, request_timeout=60)
    stopping = asyncio.Event()
    host, port = await server.start()
    task = asyncio.create_task(server.run(stopping))
    reader, writer = await asyncio.open_connection(host, port)
    await asyncio.sleep(0.1)
    stopping.set()
    await asyncio.wait_for(task, timeout=5)
    assert await asyncio.wait_for(reader.read(), timeout=5) == b""
    writer.close()
    with pytest.raises(OSError):
        await asyncio.open_connection(host, port)


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("[::1]:9464", ("::1", 9464)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_listen_addresses_are_parsed(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["127.0.0.1", ":9464", "127.0.0.1:http", "127.0.0.1:70000", ""])
def test_malformed_listen_addresses_are_config_errors(listen: str) -> None:
    with pytest.raises(ConfigError):
        parse_listen(listen)


async def test_loop_lag_monitor_flags_a_blocked_loop_and_recovers() -> None:
    monitor = LoopLagMonitor(interval=0.05, max_lag=0.3)
    stopping = asyncio.Event()
    task = asyncio.create_task(monitor.run(stopping))
    try:
        await asyncio.sleep(0.1)
        assert await monitor.responsive()
        with capture_logs() as logs:
            time.sleep(1.0)  # noqa: ASYNC251 -- blocking the loop on purpose
            await asyncio.sleep(0.01)
            flagged = not await monitor.responsive()
        assert flagged
        assert any(entry["event"] == "health.loop_lag" for entry in logs)
        for _ in range(100):
            await asyncio.sleep(0.05)
            if await monitor.responsive():
                break
        assert await monitor.responsive()
    finally:
        stopping.set()
        await asyncio.wait_for(task, timeout=5)


async def test_healthz_with_no_checks_configured_is_healthy(serve: ServeFactory) -> None:
    async with serve({}) as served:
        response = await served.http.get("/healthz")
    assert response.status_code == 200
    assert json.loads(response.content) == {"ok": True, "checks": {}}
