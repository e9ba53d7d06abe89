"""The configured providers: loading them (settings validated, each started) and describing
every installed one for ``stenod providers``."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import httpx
import structlog
from pydantic import SecretStr

from stenod.dispatch.stepper import ProviderRuntime
from stenod.errors import ConfigError
from stenod.logging import REDACTOR
from stenod.provider import ProviderSettings, StartContext
from stenod.settings import Settings
from stenod.who_spoke.diarization import unavailable_reason
from stenod.wiring.plugin_discovery import Catalogue, Loaded, instantiate, provider_settings

log = structlog.get_logger("stenod.app")


@dataclass(slots=True)
class Providers:
    """Configured provider runtimes, and why the others are unavailable."""

    runtimes: dict[str, ProviderRuntime] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    configs: dict[str, ProviderSettings] = field(default_factory=dict)


def _register_secrets(config: ProviderSettings) -> None:
    REDACTOR.add_secrets(value.get_secret_value() for value in config.__dict__.values() if isinstance(value, SecretStr))


async def load_providers(
    settings: Settings,
    http: httpx.AsyncClient,
    stack: AsyncExitStack,
    catalogue: Catalogue | None = None,
    *,
    previous: Providers | None = None,
) -> Providers:
    """Instantiate every discovered provider that its settings allow.

    A provider configured in ``[providers.<name>]`` with invalid keys is a config error
    (exit 2). One that merely lacks settings it needs (e.g. no API key) is reported and
    unavailable: jobs asking for it fail with that reason, the daemon carries on. With
    ``previous`` (a reload), providers whose settings did not change are kept as they are.
    """
    catalogue = catalogue or Catalogue.discover()
    out = Providers()
    for name, broken in catalogue.broken.items():
        log.error("plugin.broken", plugin=name, distribution=broken.distribution, reason=broken.reason)
        out.unavailable[name] = f"plugin failed to load: {broken.reason}"
    for name in settings.providers:
        if name not in catalogue.available and name not in catalogue.broken:
            raise ConfigError(
                f"invalid configuration: providers.{name}: no provider plugin named {name!r} is "
                f"installed (available: {', '.join(sorted(catalogue.available)) or 'none'})"
            )
    for name, loaded in sorted(catalogue.available.items()):
        raw = settings.providers.get(name)
        try:
            config = provider_settings(loaded, raw)
        except ConfigError as exc:
            if raw is not None:
                raise
            out.unavailable[name] = f"not configured ({exc})"
            continue
        _register_secrets(config)
        out.configs[name] = config
        if previous is not None and previous.configs.get(name) == config and name in previous.runtimes:
            out.runtimes[name] = previous.runtimes[name]
            continue
        provider = instantiate(loaded, config, http)
        aclose = getattr(provider, "aclose", None)
        if aclose is not None:
            stack.push_async_callback(aclose)
        start = getattr(provider, "start", None)
        if start is not None:
            try:
                await start(StartContext(state_dir=settings.state_dir))
            except ConfigError as exc:
                if name in _needed(settings):
                    raise ConfigError(f"provider {name!r} cannot start: {exc}") from exc
                log.error("provider.unavailable", provider=name, reason=str(exc))
                out.unavailable[name] = str(exc)
                continue
        interval = config.poll_interval_seconds
        out.runtimes[name] = ProviderRuntime(
            name=name,
            provider=provider,
            limits=provider.limits,
            poll_interval=interval if interval is not None else provider.limits.min_poll_seconds,
            # A local engine knows its capacity (its workers) only once started.
            max_concurrent_jobs=config.max_concurrent_jobs or getattr(provider, "max_concurrent_jobs", 1),
        )
    _refuse_undiarizable(settings, out)
    return out


def _refuse_undiarizable(settings: Settings, providers: Providers) -> None:
    """A folder rule that asks who spoke of a provider that cannot stops the start (exit 2)
    or the reload, instead of failing every file dropped there."""
    for rule in settings.watch:
        name = rule.provider or settings.default_provider
        runtime = providers.runtimes.get(name)
        if not rule.diarize or runtime is None:
            continue  # an unavailable provider is reported for every rule (Daemon.warn_unavailable)
        if (reason := unavailable_reason(name, runtime.limits)) is not None:
            raise ConfigError(f"invalid configuration: watch rule {rule.path}: diarize = true, but {reason}")


def _needed(settings: Settings) -> set[str]:
    """Providers the configuration relies on: a failure to start them stops the daemon."""
    return {
        settings.default_provider,
        *settings.providers,
        *(rule.provider for rule in settings.watch if rule.provider),
        *(rule.translate_provider for rule in settings.watch if rule.translate_provider),
    }


def _described(loaded: Loaded, settings: Settings) -> dict[str, Any]:
    """A provider's own facts (its ``describe()``: the model in use, the device), if it has any."""
    if not hasattr(loaded.cls, "describe"):
        return {}
    try:
        config = provider_settings(loaded, settings.providers.get(loaded.name))
        provider = instantiate(loaded, config, None)  # type: ignore[arg-type]
        return dict(provider.describe(StartContext(state_dir=settings.state_dir)))  # type: ignore[attr-defined]
    except ConfigError as exc:
        return {"describe_error": str(exc)}


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
        rows.append(
            {
                "name": name,
                "distribution": loaded.distribution,
                "status": "ok",
                "configured": configured,
                "tasks": sorted(str(t) for t in limits.tasks),
                "formats": sorted(limits.formats),
                "max_files": limits.max_files,
                "max_file_bytes": limits.max_file_bytes,
                "max_batch_bytes": limits.max_batch_bytes,
                "max_audio_seconds": limits.max_audio_seconds,
                "min_poll_seconds": limits.min_poll_seconds,
                **_described(loaded, settings),
            }
        )
    for name, broken in sorted(catalogue.broken.items()):
        rows.append(
            {
                "name": name,
                "distribution": broken.distribution,
                "status": "broken",
                "error": broken.reason,
                "target": broken.target,
            }
        )
    return rows
