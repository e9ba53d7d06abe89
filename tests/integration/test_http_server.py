"""The HTTP server in the daemon's loop, over real loopback TCP: health checks, metrics,
start-up and shutdown, and the settings that guard it. The app is built with the real
journal and request intake; the health checks are the test's own values."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from stenod.adapters.downloads.url_policy import UrlPolicy
from stenod.adapters.folders.local_inputs import LocalInputs
from stenod.adapters.folders.writers import FileSink
from stenod.adapters.http.build import HttpParts, build_http
from stenod.adapters.http.context import Check
from stenod.adapters.http.retention import ResultsKeeper
from stenod.adapters.sqlite.journal import SqliteJournal
from stenod.corrections import Corrections
from stenod.errors import ConfigError
from stenod.intake.request_intake import RequestIntake
from stenod.job_watch import JobWatch
from stenod.loop_lag import LoopLagMonitor
from stenod.settings import HttpSettings
from stenod.settings_loading import check_listen, parse_listen
from stenod.wiring.metrics import PrometheusMetrics


class EmptyDaemon:
    """A daemon with no providers, no folders and no broker, as the routes see it."""

    def providers(self) -> tuple[Sequence[str], Mapping[str, str]]:
        return [], {}

    def configured(self) -> set[str]:
        return set()

    def watched(self) -> list[dict[str, Any]]:
        return []

    def status_lines(self) -> list[str]:
        return []

    def audio_roots(self) -> Sequence[Path]:
        return []

    def probe_format(self, path: Path) -> str | None:
        return None

    def state_full(self) -> str | None:
        return None

    def notify(self) -> None:
        pass

    def wake_urls(self) -> None:
        pass


def parts(
    tmp: Path,
    journal: SqliteJournal,
    intake: RequestIntake,
    checks: Mapping[str, Check],
    *,
    metrics: PrometheusMetrics | None = None,
    json_bytes: int = 65536,
) -> HttpParts:
    """What the HTTP adapter needs, for a server with no folders, no broker and no jobs."""
    return HttpParts(
        intake=intake,
        journal=journal,
        watch=JobWatch(),
        corrections=Corrections(journal, FileSink(tmp / "results")),
        results=ResultsKeeper(journal, tmp, keep_days=7),
        checks=checks,
        registry=(metrics or PrometheusMetrics()).registry,
        daemon=EmptyDaemon(),
        json_bytes=json_bytes,
    )


class Flag:
    """A health check the test can flip, like a broker connection coming and going."""

    def __init__(self, value: bool = True) -> None:
        self.value = value

    async def __call__(self) -> bool:
        return self.value


@asynccontextmanager
async def serving(
    tmp: Path, checks: Mapping[str, Check], metrics: PrometheusMetrics | None = None, **http: object
) -> AsyncIterator[httpx.AsyncClient]:
    journal = SqliteJournal.open(tmp / "journal.db")
    intake = RequestIntake(
        journal, LocalInputs([], UrlPolicy()), lambda: ({}, {}), default_provider="whisper", max_body_bytes=65536
    )
    server = await build_http(
        HttpSettings(listen="127.0.0.1:0", **http),  # type: ignore[arg-type]
        tmp,
        parts(tmp, journal, intake, checks, metrics=metrics),
    )
    host, port = server.bind()
    stopping = asyncio.Event()
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(server.run(stopping), name="http")
            async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=10) as http_client:
                yield http_client
            stopping.set()
    finally:
        intake.close()
        journal.close()


def sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return None


async def test_healthz_is_200_with_every_check_when_all_pass(tmp_path: Path) -> None:
    async with serving(tmp_path, {"journal": Flag(), "broker": Flag()}) as http:
        response = await http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"ok": True, "checks": {"broker": {"ok": True}, "journal": {"ok": True}}}


async def test_healthz_turns_503_when_the_broker_goes_away_and_200_when_it_returns(tmp_path: Path) -> None:
    broker = Flag()
    async with serving(tmp_path, {"journal": Flag(), "broker": broker}) as http:
        before = await http.get("/healthz")
        broker.value = False
        during = await http.get("/healthz")
        broker.value = True
        after = await http.get("/healthz")
    assert [before.status_code, during.status_code, after.status_code] == [200, 503, 200]
    assert during.json()["checks"] == {"broker": {"ok": False}, "journal": {"ok": True}}


async def test_checks_added_after_start_are_served(tmp_path: Path) -> None:
    checks: dict[str, Check] = {"journal": Flag()}
    async with serving(tmp_path, checks) as http:
        checks["broker"] = Flag(False)
        response = await http.get("/healthz")
    assert response.status_code == 503 and response.json()["checks"]["broker"] == {"ok": False}


async def test_a_check_that_does_not_answer_is_unhealthy(tmp_path: Path) -> None:
    async def hangs() -> bool:
        await asyncio.Event().wait()
        return True

    async with serving(tmp_path, {"journal": hangs}) as http:
        response = await http.get("/healthz")
    assert response.status_code == 503 and "no answer" in response.json()["checks"]["journal"]["error"]


async def test_a_check_that_raises_is_unhealthy(tmp_path: Path) -> None:
    async def broken() -> bool:
        raise RuntimeError("journal is gone")

    with capture_logs():
        async with serving(tmp_path, {"journal": broken}) as http:
            response = await http.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["journal"] == {"ok": False, "error": "RuntimeError"}


async def test_metrics_values_move_as_jobs_run(tmp_path: Path) -> None:
    metrics = PrometheusMetrics()
    async with serving(tmp_path, {}, metrics) as http:
        metrics.job_state("whisper", "accepted")
        first = (await http.get("/metrics")).text
        metrics.job_state("whisper", "accepted")
        second = (await http.get("/metrics")).text
    assert sample(first, "stenod_jobs_total", provider="whisper", state="accepted") == 1
    assert sample(second, "stenod_jobs_total", provider="whisper", state="accepted") == 2


async def test_metrics_speak_openmetrics_when_asked(tmp_path: Path) -> None:
    async with serving(tmp_path, {}) as http:
        response = await http.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


async def test_unknown_paths_and_methods_answer_in_openais_error_shape(tmp_path: Path) -> None:
    async with serving(tmp_path, {}) as http:
        missing, method = await http.get("/nope"), await http.post("/healthz")
    assert (missing.status_code, method.status_code) == (404, 405)
    assert missing.json()["error"]["type"] == "invalid_request_error"


async def test_healthz_answers_while_the_loop_serves_a_slow_stream(tmp_path: Path) -> None:
    async with serving(tmp_path, {"journal": Flag()}) as http:
        started = time.monotonic()
        answers = await asyncio.gather(*(http.get("/healthz") for _ in range(20)))
    assert all(a.status_code == 200 for a in answers) and time.monotonic() - started < 5


async def test_a_busy_port_is_a_configuration_error(tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        journal = SqliteJournal.open(tmp_path / "journal.db")
        intake = RequestIntake(
            journal, LocalInputs([], UrlPolicy()), lambda: ({}, {}), default_provider="whisper", max_body_bytes=1024
        )
        server = await build_http(
            HttpSettings(listen=f"127.0.0.1:{port}"), tmp_path, parts(tmp_path, journal, intake, {}, json_bytes=1024)
        )
        with pytest.raises(ConfigError, match="cannot be used"):
            server.bind()
        intake.close()
        journal.close()
    finally:
        taken.close()


@pytest.mark.parametrize(
    ("listen", "expected"),
    [("127.0.0.1:8000", ("127.0.0.1", 8000)), ("[::1]:8000", ("::1", 8000)), ("localhost:0", ("localhost", 0))],
)
def test_listen_addresses_are_parsed(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["127.0.0.1", ":9464", "127.0.0.1:http", "127.0.0.1:70000", ""])
def test_malformed_listen_addresses_are_config_errors(listen: str) -> None:
    with pytest.raises(ConfigError):
        parse_listen(listen)


def test_a_lan_address_without_keys_is_refused() -> None:
    with pytest.raises(ConfigError, match="no API key is set"):
        check_listen("0.0.0.0:8000", keys=False)
    check_listen("0.0.0.0:8000", keys=True)
    check_listen("127.0.0.1:8000", keys=False)


async def test_loop_lag_monitor_flags_a_blocked_loop_and_recovers() -> None:
    monitor = LoopLagMonitor(interval=0.05, max_lag=0.3)
    stopping = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(monitor.run(stopping), name="lag")
        await asyncio.sleep(0.1)
        assert await monitor.responsive()
        with capture_logs() as logs:
            time.sleep(1.0)  # noqa: ASYNC251 -- blocking the loop on purpose
            await asyncio.sleep(0.01)
            flagged = not await monitor.responsive()
        assert flagged and any(entry["event"] == "health.loop_lag" for entry in logs)
        for _ in range(100):
            await asyncio.sleep(0.05)
            if await monitor.responsive():
                break
        assert await monitor.responsive()
        stopping.set()


async def test_healthz_with_no_checks_configured_is_healthy(tmp_path: Path) -> None:
    async with serving(tmp_path, {}) as http:
        response = await http.get("/healthz")
    assert response.status_code == 200 and json.loads(response.content) == {"ok": True, "checks": {}}
