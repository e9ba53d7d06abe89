"""Wiring of the HTTP server from the daemon's parts (called by the composition root)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry

from stenod import __version__
from stenod.adapters.http.app import create_app
from stenod.adapters.http.auth import Keys
from stenod.adapters.http.context import Check, DaemonView, HttpContext
from stenod.adapters.http.front_door import HostNames
from stenod.adapters.http.retention import ResultsKeeper
from stenod.adapters.http.server import HttpServer
from stenod.adapters.http.sessions import PageSessions
from stenod.adapters.http.spool import Spool
from stenod.corrections import Corrections
from stenod.intake.request_intake import RequestIntake
from stenod.job_watch import JobWatch
from stenod.journal import Journal
from stenod.settings import HttpSettings
from stenod.settings_loading import parse_listen
from stenod.who_spoke.naming import SpeakerNaming

__all__ = ["HttpParts", "build_http"]


@dataclass(frozen=True, slots=True)
class HttpParts:
    """What the composition root hands the HTTP adapter: the core's entry points, the
    daemon's checks and metrics, and the running daemon itself (``DaemonView``)."""

    intake: RequestIntake
    journal: Journal
    watch: JobWatch
    corrections: Corrections
    results: ResultsKeeper  # how long uploads' jobs are kept (410 after)
    checks: Mapping[str, Check]
    registry: CollectorRegistry
    daemon: DaemonView
    json_bytes: int  # caps a JSON request body (the queue's ``max_body_bytes``)
    remember_voices: bool = True


async def build_http(settings: HttpSettings, state_dir: Path, parts: HttpParts) -> HttpServer:
    """The server, not yet bound; the spool is swept of uploads no job needs any more."""
    assert settings.listen is not None
    spool = Spool(state_dir / "spool", max_bytes=settings.max_upload_bytes)
    await spool.sweep(parts.journal.live_paths)
    keys = Keys([k.get_secret_value() for k in settings.api_keys], settings.keyless_networks)
    sessions = await asyncio.to_thread(PageSessions, state_dir / "page", keys)
    context = HttpContext(
        intake=parts.intake,
        journal=parts.journal,
        watch=parts.watch,
        spool=spool,
        keys=keys,
        sessions=sessions,
        results_dir=state_dir / "results",
        sync_timeout_seconds=settings.sync_timeout_seconds,
        version=__version__,
        checks=parts.checks,
        registry=parts.registry,
        stopping=asyncio.Event(),
        daemon=parts.daemon,
        corrections=parts.corrections,
        naming=SpeakerNaming(parts.corrections, parts.journal, remember_voices=parts.remember_voices),
        uploads_dir=state_dir / "uploads",
        results=parts.results,
    )
    # The machine's names may take a resolver's answer: off the loop.
    hosts = await asyncio.to_thread(HostNames, parse_listen(settings.listen)[0], settings.allowed_hosts)
    app = create_app(context, hosts=hosts, json_bytes=parts.json_bytes)
    return HttpServer(app, settings.listen, trusted_proxies=settings.trusted_proxies, stopping=context.stopping)
