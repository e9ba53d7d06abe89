"""Wiring of the HTTP server from the daemon's parts (called by the composition root)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from stenod import __version__
from stenod.adapters.http.app import create_app
from stenod.adapters.http.auth import Keys
from stenod.adapters.http.context import Check, HttpContext
from stenod.adapters.http.front_door import HostNames
from stenod.adapters.http.retention import ResultsKeeper
from stenod.adapters.http.server import HttpServer
from stenod.adapters.http.sessions import PageSessions
from stenod.adapters.http.spool import Spool
from stenod.corrections import Corrections
from stenod.intake.request_intake import RequestIntake
from stenod.job_watch import JobWatch
from stenod.journal import Journal
from stenod.settings import HttpSettings, parse_listen
from stenod.speaker_naming import SpeakerNaming

__all__ = ["build_http"]


async def build_http(
    settings: HttpSettings,
    state_dir: Path,
    *,
    intake: RequestIntake,
    journal: Journal,
    watch: JobWatch,
    checks: Mapping[str, Check],
    registry: CollectorRegistry,
    providers: Callable[[], tuple[Sequence[str], Mapping[str, str]]],
    notify: Callable[[], None],
    wake_urls: Callable[[], None],
    corrections: Corrections,
    audio_roots: Callable[[], Sequence[Path]],
    watched: Callable[[], list[dict[str, Any]]],
    status_lines: Callable[[], list[str]],
    configured: Callable[[], set[str]],
    json_bytes: int,
    probe_format: Callable[[Path], str | None],
    state_full: Callable[[], str | None],
    results: ResultsKeeper,
    remember_voices: bool = True,
) -> HttpServer:
    """The server, not yet bound; the spool is swept of uploads no job needs any more.
    ``json_bytes`` caps a JSON request body (the queue's ``max_body_bytes``)."""
    assert settings.listen is not None
    spool = Spool(state_dir / "spool", max_bytes=settings.max_upload_bytes)
    await spool.sweep(journal.live_paths)
    keys = Keys([k.get_secret_value() for k in settings.api_keys], settings.keyless_networks)
    sessions = await asyncio.to_thread(PageSessions, state_dir / "page", keys)
    context = HttpContext(
        intake=intake,
        journal=journal,
        watch=watch,
        spool=spool,
        keys=keys,
        sessions=sessions,
        results_dir=state_dir / "results",
        sync_timeout_seconds=settings.sync_timeout_seconds,
        version=__version__,
        checks=checks,
        registry=registry,
        stopping=asyncio.Event(),
        providers=providers,
        notify=notify,
        wake_urls=wake_urls,
        corrections=corrections,
        naming=SpeakerNaming(corrections, journal, remember_voices=remember_voices),
        uploads_dir=state_dir / "uploads",
        audio_roots=lambda: [state_dir / "uploads", *audio_roots()],
        watched=watched,
        status_lines=status_lines,
        configured=configured,
        probe_format=probe_format,
        state_full=state_full,
        results=results,
    )
    # The machine's names may take a resolver's answer: off the loop.
    hosts = await asyncio.to_thread(HostNames, parse_listen(settings.listen)[0], settings.allowed_hosts)
    app = create_app(context, hosts=hosts, json_bytes=json_bytes)
    return HttpServer(app, settings.listen, trusted_proxies=settings.trusted_proxies, stopping=context.stopping)
