"""The composition root: build every component from the settings, run them in one TaskGroup.

Only this module wires adapters to the core. SIGTERM/SIGINT set ``stopping``: sources
stop taking work, in-flight provider steps get the grace time to reach their next
journal commit, the rest is cancelled (and resumes from its checkpoint on restart).
SIGHUP reloads watch rules and provider settings; an invalid file keeps the old ones.
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import signal
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import structlog

from stenod.adapters.downloads.url_downloader import UrlDownloader
from stenod.adapters.downloads.url_fetch_service import UrlFetchService
from stenod.adapters.downloads.url_policy import UrlPolicy
from stenod.adapters.folders.disk_space import DiskSpace
from stenod.adapters.folders.local_inputs import LocalInputs
from stenod.adapters.folders.media_probe import MediaProbe
from stenod.adapters.folders.source import FolderSource
from stenod.adapters.folders.watchers import Watchers
from stenod.adapters.folders.writers import FileSink
from stenod.adapters.sql.journal import default_instance_id
from stenod.adapters.sqlite.journal import SqliteJournal
from stenod.adapters.systemd.notify import SystemdNotifier
from stenod.corrections import Corrections
from stenod.dispatch.dispatcher import Dispatcher
from stenod.errors import ConfigError, JournalError
from stenod.events_wait import first_of
from stenod.fault_points import sigterm_at
from stenod.intake.request_intake import RequestIntake
from stenod.job_watch import JobWatch
from stenod.journal import Journal
from stenod.logging import REDACTOR
from stenod.loop_lag import LoopLagMonitor
from stenod.settings import Settings, WatchRule
from stenod.settings_loading import load_settings
from stenod.wiring.metrics import PrometheusMetrics
from stenod.wiring.plugin_discovery import Catalogue
from stenod.wiring.provider_setup import Providers, load_providers

log = structlog.get_logger("stenod.app")

_STATUS_SECONDS = 10.0
_READY_TIMEOUT_SECONDS = 60.0

Service = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
Check = Callable[[], Awaitable[bool | Mapping[str, Any]]]  # a mapping: {"ok": …} and details


class Source(Protocol):
    name: str

    async def run(self, stopping: asyncio.Event) -> None: ...


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
    journal: Journal
    providers: Providers
    dispatcher: Dispatcher
    watchers: Watchers
    metrics: PrometheusMetrics
    http: httpx.AsyncClient
    sink: FileSink
    media: MediaProbe  # libav's look at untrusted containers, in a child process
    disk: DiskSpace
    sources: list[Source] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    health: dict[str, Check] = field(default_factory=dict)
    status_parts: dict[str, Callable[[], str]] = field(default_factory=dict)

    def warn_unavailable(self, rules: list[WatchRule]) -> None:
        for rule in rules:
            provider = rule.provider or self.settings.default_provider
            if provider not in self.providers.runtimes:
                reason = self.providers.unavailable.get(provider, "no such provider is installed")
                log.error(
                    "watch.provider_unavailable",
                    path=str(rule.path),
                    provider=provider,
                    reason=reason,
                    hint="files dropped here fail with this reason until the provider is fixed",
                )


async def open_journal(settings: Settings) -> tuple[Journal, Service | None]:
    """The journal the configuration names (SQLite in ``state_dir``, or a PostgreSQL
    database), and the service it needs run alongside the daemon, if any."""
    options: dict[str, Any] = {
        "outbox": settings.amqp_enabled,
        "inline_transcript_bytes": settings.amqp.inline_transcript_bytes,
        "instance_id": settings.instance_id or default_instance_id(settings.state_dir),
        "lease_seconds": settings.journal.lease_seconds,
    }
    if (url := settings.journal_url) is not None:
        from stenod.adapters.postgres.journal import PostgresJournal  # psycopg only when it is used

        REDACTOR.add_secrets([url])
        journal = await PostgresJournal.open(
            url,
            max_connections=settings.journal.max_connections,
            reconnect_seconds=settings.journal.reconnect_seconds,
            lock_instance=True,
            **options,
        )
        return journal, journal.keep_instance_lock
    return SqliteJournal.open(settings.journal_path, **options), None


async def build(
    settings: Settings, stack: AsyncExitStack, *, catalogue: Catalogue | None = None, use_watcher: bool = True
) -> Daemon:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    if settings.amqp.url is not None:
        REDACTOR.add_secrets([settings.amqp.url.get_secret_value()])
    http = await stack.enter_async_context(http_client(settings))
    journal, journal_service = await open_journal(settings)
    stack.push_async_callback(journal.aclose)
    providers = await load_providers(settings, http, stack, catalogue)
    metrics = PrometheusMetrics()
    metrics.instance(journal.instance_id)
    watch = JobWatch()
    journal.on_change = watch.changed
    journal.on_entered = metrics.jobs_entered
    sink = FileSink(settings.state_dir / "results")
    media = MediaProbe()
    stack.callback(media.close)
    dispatcher = Dispatcher(
        journal,
        providers.runtimes,
        sink,
        settings.retry,
        probe=media.duration,
        pack_window_seconds=settings.pack_window_seconds,
        progress_interval_seconds=settings.amqp.progress_interval_seconds,
        grace_seconds=settings.shutdown_grace_seconds,
        metrics=metrics,
        live=watch,
    )

    def folder(rule: WatchRule) -> FolderSource:
        return FolderSource(
            rule,
            journal,
            dispatcher.notify,
            provider=rule.provider or settings.default_provider,
            rescan_seconds=settings.rescan_interval_seconds,
            use_watcher=use_watcher,
            metrics=metrics,
            recall_voices=settings.diarization.remember_voices,
        )

    watchers = Watchers(folder, list(settings.watch))
    disk = DiskSpace(
        settings.state_dir,
        lambda: [r.output_dir or r.path for r in daemon.settings.watch],
        min_free_bytes=settings.min_free_bytes,
        warn_free_bytes=settings.warn_free_bytes,
        journal_full=journal.disk_full,
    )
    daemon = Daemon(settings, journal, providers, dispatcher, watchers, metrics, http, sink, media, disk)
    daemon.warn_unavailable(settings.watch)
    daemon.sources.append(watchers)
    lag = LoopLagMonitor()
    daemon.services.append(lag.run)
    if journal_service is not None:
        daemon.services.append(journal_service)
    daemon.health["journal"] = journal.ping
    daemon.health["loop"] = lag.responsive
    daemon.health["disk"] = daemon.disk.check
    if settings.amqp_enabled or settings.http.listen:
        await _requests(daemon, stack, watch)
    if settings.wyoming.listen:
        from stenod.voice.kept import KeptCommands
        from stenod.wiring.wyoming_setup import build_wyoming, live_view

        view = live_view(
            lambda: daemon.providers,
            lambda: daemon.settings.providers,
            folder=settings.state_dir / "wyoming",
            timeout_seconds=settings.wyoming.command_timeout_seconds,
        )
        kept = KeptCommands(journal, metrics) if settings.wyoming.keep else None
        parts, _ = await build_wyoming(settings.wyoming, view, metrics.registry, kept=kept)
        daemon.services.append(parts.run)
        daemon.health["wyoming"] = parts.healthy
        if kept is not None and not settings.http.listen:  # with HTTP on, its keeper forgets them
            from stenod.adapters.http.retention import ResultsKeeper

            days = settings.http.keep_results_days
            daemon.services.append(ResultsKeeper(journal, settings.state_dir, keep_days=days, metrics=metrics).run)
    return daemon


async def _requests(daemon: Daemon, stack: AsyncExitStack, watch: JobWatch) -> None:
    """The request interfaces (queue, HTTP) around one request intake, and the URL downloader."""
    settings, journal, metrics = daemon.settings, daemon.journal, daemon.metrics
    amqp = settings.amqp
    policy = UrlPolicy(allow_http=amqp.allow_http_urls, allow_private=amqp.allow_private_urls)
    downloader = UrlDownloader(
        policy,
        max_bytes=amqp.max_download_bytes,
        timeout_seconds=amqp.download_timeout_seconds,
        min_free_bytes=settings.min_free_bytes,
        user_agent=settings.http.user_agent,
    )
    notify = daemon.dispatcher.notify
    fetcher = UrlFetchService(journal, downloader, notify, amqp.downloads_dir or settings.state_dir / "downloads")
    daemon.services.append(fetcher.run)
    intake = RequestIntake(
        journal,
        LocalInputs(amqp.allowed_roots, policy),
        lambda: (daemon.providers.runtimes, daemon.providers.unavailable),
        default_provider=settings.default_provider,
        max_body_bytes=amqp.max_body_bytes,
        recall_voices=settings.diarization.remember_voices,
    )
    stack.callback(intake.close)  # after the TaskGroup: no source uses it any more
    if settings.amqp_enabled:
        from stenod.adapters.amqp.source import build_amqp

        parts = build_amqp(settings, journal, intake, notify, on_urls=fetcher.wake, metrics=metrics)
        stack.push_async_callback(parts.aclose)  # runs after the TaskGroup, before the journal closes
        daemon.sources.append(parts.source)
        daemon.services.extend(parts.services)
        daemon.health["broker"] = parts.link.healthy
        daemon.status_parts["amqp"] = parts.link.status
    if settings.http.listen:
        from stenod.adapters.http.build import HttpParts, build_http
        from stenod.adapters.http.retention import ResultsKeeper
        from stenod.wiring.http_view import DaemonHttpView

        keeper = ResultsKeeper(journal, settings.state_dir, keep_days=settings.http.keep_results_days, metrics=metrics)
        daemon.services.append(keeper.run)

        REDACTOR.add_secrets(k.get_secret_value() for k in settings.http.api_keys)
        http_parts = HttpParts(
            intake=intake,
            journal=journal,
            watch=watch,
            corrections=Corrections(journal, daemon.sink),
            results=keeper,
            checks=daemon.health,
            registry=metrics.registry,
            daemon=DaemonHttpView(daemon, wake_urls=fetcher.wake, queue_roots=amqp.allowed_roots),
            json_bytes=amqp.max_body_bytes,
            remember_voices=settings.diarization.remember_voices,
        )
        server = await build_http(settings.http, settings.state_dir, http_parts)
        server.bind()  # a busy port fails at start-up, not later
        daemon.services.append(server.run)


async def reload(daemon: Daemon, stack: AsyncExitStack) -> None:
    """Re-read the config file: new watch rules and provider settings; jobs in flight go on."""
    try:
        fresh = load_settings(daemon.settings.config_file)
        providers = await load_providers(fresh, daemon.http, stack, previous=daemon.providers)
    except ConfigError as exc:
        log.error("config.reload_refused", error=str(exc), hint="the previous configuration stays in force")
        return
    if fresh.state_dir != daemon.settings.state_dir or fresh.amqp != daemon.settings.amqp:
        log.warning("config.reload_partial", hint="state_dir and [amqp] changes need a restart")
    daemon.providers = providers
    daemon.dispatcher.replace_runtimes(providers.runtimes)
    daemon.warn_unavailable(fresh.watch)
    daemon.watchers.replace(list(fresh.watch))
    daemon.settings = fresh.model_copy(update={"state_dir": daemon.settings.state_dir, "amqp": daemon.settings.amqp})
    log.info("config.reloaded", watching=[str(r.path) for r in fresh.watch], providers=sorted(providers.runtimes))


async def _status_loop(daemon: Daemon, notifier: SystemdNotifier, stopping: asyncio.Event) -> None:
    """Metrics gauges and the STATUS= line a person reads in `systemctl status`."""
    while not stopping.is_set():
        counts = await daemon.journal.counts()
        daemon.metrics.set_job_counts(counts)
        in_flight = sum(
            n for states in counts.values() for s, n in states.items() if s in ("accepted", "submitted", "running")
        )
        parts = [f"{in_flight} jobs in flight", *(part() for part in daemon.status_parts.values())]
        notifier.status("; ".join(parts))
        try:
            async with asyncio.timeout(_STATUS_SECONDS if in_flight or daemon.status_parts else 60.0):
                await stopping.wait()
        except TimeoutError:
            pass


async def run(settings: Settings, *, notifier: SystemdNotifier | None = None) -> int:
    """Run the daemon until SIGTERM/SIGINT; returns the process exit code."""
    faulthandler.enable()
    notifier = notifier or SystemdNotifier()
    stopping = asyncio.Event()
    reload_requested = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stop() -> None:
        notifier.stopping("stopping: finishing in-flight steps")
        stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    loop.add_signal_handler(signal.SIGHUP, reload_requested.set)
    try:
        async with AsyncExitStack() as stack:
            sigterm_at("daemon.building")
            daemon = await build(settings, stack)

            async def healthy() -> bool:
                # Only what a restart can cure: our loop and our journal machinery. A database that
                # is away is /healthz's to report and the journal's to wait for, not a reason to restart.
                return all([await daemon.health["loop"](), await daemon.journal.alive()])

            async def ready() -> None:
                try:
                    async with asyncio.timeout(_READY_TIMEOUT_SECONDS):
                        await daemon.watchers.scanned()
                except TimeoutError:
                    log.warning("daemon.start_scan_slow")
                notifier.ready("ready")
                log.info(
                    "daemon.ready",
                    pid=os.getpid(),
                    providers=sorted(daemon.providers.runtimes),
                    unavailable=daemon.providers.unavailable,
                    watching=[str(r.path) for r in settings.watch],
                    amqp=settings.amqp_enabled,
                    state_dir=str(settings.state_dir),
                )

            async def reloads() -> None:
                while True:
                    await first_of(stopping, reload_requested)
                    if stopping.is_set():
                        return
                    reload_requested.clear()
                    notifier.reloading()
                    await reload(daemon, stack)
                    notifier.ready("ready (reloaded)")

            sigterm_at("daemon.starting")
            async with asyncio.TaskGroup() as tg:
                for source in daemon.sources:
                    tg.create_task(source.run(stopping), name=f"source:{source.name}")
                for service in daemon.services:
                    tg.create_task(service(stopping), name=f"service:{getattr(service, '__qualname__', service)}")
                tg.create_task(daemon.dispatcher.run(stopping), name="dispatcher")
                tg.create_task(ready(), name="readiness")
                tg.create_task(reloads(), name="reloads")
                tg.create_task(notifier.watchdog(stopping, healthy), name="watchdog")
                tg.create_task(_status_loop(daemon, notifier, stopping), name="status")
            log.info("daemon.stopping")
    except BaseExceptionGroup as group:
        # A journal that is gone stops every task; say so plainly (exit 1, restarted by systemd).
        if (lost := group.subgroup(JournalError)) is not None:
            raise _first_leaf(lost) from group
        raise
    log.info("daemon.stopped")
    return 0


def _first_leaf(group: BaseExceptionGroup[Any]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first
