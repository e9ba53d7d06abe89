"""What the HTTP routes share: the core's entry points and the daemon's state, built once by
the composition root and reached from a route through FastAPI's dependency injection."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Protocol

from fastapi import Depends, Request
from prometheus_client import CollectorRegistry

from stenod.adapters.http.auth import Keys
from stenod.adapters.http.retention import ResultsKeeper
from stenod.adapters.http.sessions import PageSessions
from stenod.adapters.http.spool import Spool
from stenod.corrections import Corrections
from stenod.intake.request_intake import RequestIntake
from stenod.job_watch import JobWatch
from stenod.journal import Journal
from stenod.who_spoke.naming import SpeakerNaming

__all__ = ["Ctx", "DaemonView", "HttpContext", "require_key", "require_key_or_keyless"]

Check = Callable[[], Awaitable[bool | Mapping[str, Any]]]  # a mapping: {"ok": …} and what to say


class DaemonView(Protocol):
    """The running daemon as the routes see it: answers that change with a reload, and the
    parts a route wakes. The composition root implements it."""

    def providers(self) -> tuple[Sequence[str], Mapping[str, str]]:
        """The providers available now, and why each other one is not."""
        ...

    def configured(self) -> set[str]:
        """Providers the configuration names (the others run on their defaults)."""
        ...

    def watched(self) -> list[dict[str, Any]]:
        """The watched folders, for the status page."""
        ...

    def status_lines(self) -> list[str]:
        """The daemon's status in words (the broker link)."""
        ...

    def audio_roots(self) -> Sequence[Path]:
        """Where the page may play recordings from besides uploads: the watched folders and
        the queue's allowed roots."""
        ...

    def probe_format(self, path: Path) -> str | None:
        """An upload's container, judged by libav in a child process (blocking)."""
        ...

    def state_full(self) -> str | None:
        """What has no room for new jobs (the state directory's filesystem, the journal's
        database), None when both have (blocking)."""
        ...

    def notify(self) -> None:
        """New work is in the journal: wake the dispatcher."""
        ...

    def wake_urls(self) -> None:
        """A job has URL inputs: wake the downloader."""
        ...


@dataclass(slots=True)
class HttpContext:
    intake: RequestIntake
    journal: Journal
    watch: JobWatch
    spool: Spool
    keys: Keys
    sessions: PageSessions  # the page's sign-ins and form tokens
    results_dir: Path  # outputs of uploaded files' jobs: results/<upload id>/
    sync_timeout_seconds: float
    version: str
    checks: Mapping[str, Check]
    registry: CollectorRegistry
    stopping: asyncio.Event
    daemon: DaemonView
    corrections: Corrections
    naming: SpeakerNaming  # speakers named for a recording or for good (voices remembered)
    uploads_dir: Path  # files uploaded on the page, kept as their jobs' inputs
    results: ResultsKeeper  # how long uploads' jobs are kept (410 after)


def _context(request: Request) -> HttpContext:
    context: HttpContext = request.app.state.stenod
    return context


Ctx = Annotated[HttpContext, Depends(_context)]


def require_key(request: Request) -> None:
    """Dependency: a valid API key (when keys are configured)."""
    _context(request).keys.check(request)


def require_key_or_keyless(request: Request) -> None:
    """Dependency: a valid API key, or a client in ``[http] keyless_networks``."""
    _context(request).keys.check(request, keyless_allowed=True)
