"""The composition root: build every component from the settings, run them in one TaskGroup.

Only this module wires adapters to the core. SIGTERM/SIGINT set ``stopping``: sources
stop taking work, in-flight provider steps get the grace time to reach their next
journal commit, the rest is cancelled (and resumes from its checkpoint on restart).
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import signal
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import structlog

from stenod.adapters.file_writers import FileSink
from stenod.adapters.folder_source import FolderSource
from stenod.adapters.media_probe import probe_duration
from stenod.adapters.sqlite_journal import SqliteJournal
from stenod.dispatcher import Dispatcher, ProviderRuntime
from stenod.errors import ConfigError
from stenod.logging import REDACTOR
from stenod.plugins import Catalogue, instantiate, provider_settings
from stenod.settings import Settings

log = structlog.get_logger("stenod.app")


class Source(Protocol):
    name: str

    async def run(self, stopping: asyncio.Event) -> None: ...


@dataclass(slots=True)
class Providers:
    """Configured provider runtimes, and why the others are unavailable."""

    runtimes: dict[str, ProviderRuntime] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)


async def load_providers(settings: Settings, http: httpx.AsyncClient, stack: AsyncExitStack,
                         catalogue: Catalogue | None = None) -> Providers:
    """Instantiate every discovered provider that its settings allow.

    A provider configured in ``[providers.<name>]`` with invalid keys is a config error
    (exit 2). One that merely lacks settings it needs (e.g. no API key) is reported and
    unavailable: jobs asking for it fail with that reason, the daemon carries on.
    """
    catalogue = catalogue or Catalogue.discover()
    out = Providers()
    for name, broken in catalogue.broken.items():
        log.error("plugin.broken", plugin=name, distribution=broken.distribution, reason=broken.reason)
        out.unavailable[name] = f"plugin failed to load: {broken.reason}"
    for name in settings.providers:
        if name not in catalogue.available and name not in catalogue.broken:
            raise ConfigError(f"invalid configuration: providers.{name}: no provider plugin named {name!r} is "
                              f"installed (available: {', '.join(sorted(catalogue.available)) or 'none'})")
    for name, loaded in sorted(catalogue.available.items()):
        raw = settings.providers.get(name)
        try:
            provider_config = provider_settings(loaded, raw)
        except ConfigError as exc:
            if raw is not None:
                raise
            out.unavailable[name] = f"not configured ({exc})"
            continue
        if provider_config.api_key is not None:
            REDACTOR.add_secrets([provider_config.api_key.get_secret_value()])
        provider = instantiate(loaded, provider_config, http)
        aclose = getattr(provider, "aclose", None)
        if aclose is not None:
            stack.push_async_callback(aclose)
        limits = provider.limits
        interval = provider_config.poll_interval_seconds
        out.runtimes[name] = ProviderRuntime(
            name=name,
            provider=provider,
            limits=limits,
            poll_interval=interval if interval is not None else limits.min_poll_seconds,
            max_concurrent_jobs=provider_config.max_concurrent_jobs,
        )
    return out


def http_client(settings: Settings) -> httpx.AsyncClient:
    cfg = settings.http
    return httpx.AsyncClient(
        timeout=httpx.Timeout(cfg.timeout_seconds, connect=cfg.connect_timeout_seconds),
        limits=httpx.Limits(max_connections=cfg.max_connections, max_keepalive_connections=cfg.max_connections),
        headers={"User-Agent": cfg.user_agent},
        trust_env=False,  # no proxy or netrc from the environment: requests go where the config says
        follow_redirects=False,
    )


@dataclass(slots=True)
class Daemon:
    settings: Settings
    journal: SqliteJournal
    providers: Providers
    dispatcher: Dispatcher
    sources: list[Source]
    services: list[Callable[[asyncio.Event], Awaitable[None]]] = field(default_factory=list)
    health: dict[str, Callable[[], Awaitable[bool]]] = field(default_factory=dict)


async def build(settings: Settings, stack: AsyncExitStack, *, catalogue: Catalogue | None = None,
                use_watcher: bool = True) -> Daemon:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    if settings.amqp.url is not None:
        REDACTOR.add_secrets([settings.amqp.url.get_secret_value()])
    http = await stack.enter_async_context(http_client(settings))
    journal = SqliteJournal.open(settings.journal_path, outbox=settings.amqp_enabled,
                                 inline_transcript_bytes=settings.amqp.inline_transcript_bytes)
    stack.callback(journal.close)
    providers = await load_providers(settings, http, stack, catalogue)
    sink = FileSink(settings.state_dir / "results")
    dispatcher = Dispatcher(
        journal, providers.runtimes, sink, settings.retry, probe=probe_duration,
        pack_window_seconds=settings.pack_window_seconds,
        progress_interval_seconds=settings.amqp.progress_interval_seconds,
        grace_seconds=settings.shutdown_grace_seconds,
    )
    sources: list[Source] = []
    for rule in settings.watch:
        provider = rule.provider or settings.default_provider
        if provider not in providers.runtimes:
            reason = providers.unavailable.get(provider, "no such provider is installed")
            log.error("watch.provider_unavailable", path=str(rule.path), provider=provider, reason=reason,
                      hint="files dropped here will fail with this reason until the provider is fixed")
        sources.append(FolderSource(rule, journal, dispatcher.notify, provider=provider,
                                    rescan_seconds=settings.rescan_interval_seconds, use_watcher=use_watcher))
    daemon = Daemon(settings, journal, providers, dispatcher, sources)
    daemon.health["journal"] = journal.ping
    return daemon


async def run(settings: Settings, *, ready: Callable[[Daemon], None] | None = None) -> int:
    """Run the daemon until SIGTERM/SIGINT; returns the process exit code."""
    faulthandler.enable()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    async with AsyncExitStack() as stack:
        daemon = await build(settings, stack)
        log.info("daemon.ready", pid=os.getpid(), providers=sorted(daemon.providers.runtimes),
                 unavailable=daemon.providers.unavailable, watching=[str(r.path) for r in settings.watch],
                 amqp=settings.amqp_enabled, state_dir=str(settings.state_dir))
        if ready is not None:
            ready(daemon)
        async with asyncio.TaskGroup() as tg:
            for source in daemon.sources:
                tg.create_task(source.run(stopping), name=f"source:{source.name}")
            for service in daemon.services:
                tg.create_task(service(stopping), name=f"service:{getattr(service, '__qualname__', service)}")
            tg.create_task(daemon.dispatcher.run(stopping), name="dispatcher")
        log.info("daemon.stopping")
    log.info("daemon.stopped")
    return 0


def describe_providers(catalogue: Catalogue, settings: Settings) -> list[dict[str, Any]]:
    """What `stenod providers` prints: every plugin, its limits, configured or not, errors."""
    rows: list[dict[str, Any]] = []
    for name, loaded in sorted(catalogue.available.items()):
        limits = loaded.cls.limits
        configured: str
        try:
            provider_settings(loaded, settings.providers.get(name))
            configured = "yes" if name in settings.providers else "defaults"
        except ConfigError as exc:
            configured = f"no: {exc}"
        rows.append({
            "name": name, "distribution": loaded.distribution, "status": "ok", "configured": configured,
            "tasks": sorted(str(t) for t in limits.tasks), "formats": sorted(limits.formats),
            "max_files": limits.max_files, "max_file_bytes": limits.max_file_bytes,
            "max_batch_bytes": limits.max_batch_bytes, "max_audio_seconds": limits.max_audio_seconds,
            "min_poll_seconds": limits.min_poll_seconds,
        })
    for name, broken in sorted(catalogue.broken.items()):
        rows.append({"name": name, "distribution": broken.distribution, "status": "broken",
                     "error": broken.reason, "target": broken.target})
    return rows

