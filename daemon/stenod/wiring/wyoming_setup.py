"""Wiring of the Wyoming listener (``[wyoming] listen``): the voice-command service over
the configured providers, their live engines started, the socket bound, health and metrics."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from stenod.errors import ConfigError
from stenod.provider import Provider, Task
from stenod.settings import WyomingSettings
from stenod.settings_loading import parse_listen
from stenod.voice.commands import CommandDefaults, LiveEntry, LiveView, VoiceCommands
from stenod.voice.kept import KeptCommands
from stenod.voice.live import LiveTranscriber
from stenod.voice.live_batch import BatchAsLive
from stenod.wiring.provider_setup import Providers

__all__ = ["WyomingParts", "build_wyoming", "live_view"]


@dataclass(frozen=True, slots=True)
class WyomingParts:
    """What the composition root runs and checks."""

    run: Callable[[asyncio.Event], Coroutine[Any, Any, None]]
    healthy: Callable[[], Awaitable[bool]]


def live_view(
    providers: Callable[[], Providers], configured: Callable[[], Iterable[str]], *, folder: Path, timeout_seconds: float
) -> LiveView:
    """Which providers answer voice commands: those with a live engine (whisper), and the
    cloud ones configured in ``[providers.<name>]`` that transcribe WAV (their batch API in
    memory); and why each other provider does not."""
    adapters: dict[str, tuple[Provider, BatchAsLive]] = {}

    def view() -> tuple[Mapping[str, LiveEntry], Mapping[str, str]]:
        current = providers()
        live: dict[str, LiveEntry] = {}
        why_not = dict(current.unavailable)
        wanted = set(configured())
        for name, runtime in current.runtimes.items():
            provider, limits = runtime.provider, runtime.provider.limits
            if Task.TRANSCRIBE not in limits.tasks:
                why_not[name] = "it does not transcribe speech"
            elif isinstance(provider, LiveTranscriber):
                live[name] = LiveEntry(provider, limits, f"{name}: on this machine, a worker kept for commands")
            elif "wav" not in limits.formats:
                why_not[name] = "it does not take WAV audio"
            elif name not in wanted:
                why_not[name] = f"it is not configured ([providers.{name}] in the config file)"
            else:
                if name not in adapters or adapters[name][0] is not provider:
                    poll, timeout = runtime.poll_interval, timeout_seconds
                    batch = BatchAsLive(name, provider, poll_seconds=poll, folder=folder, timeout_seconds=timeout)
                    adapters[name] = (provider, batch)
                live[name] = LiveEntry(adapters[name][1], limits, f"{name}: cloud, its batch API in memory")
        return live, why_not

    return view


async def build_wyoming(
    settings: WyomingSettings, providers: LiveView, registry: CollectorRegistry, *, kept: KeptCommands | None = None
) -> tuple[WyomingParts, VoiceCommands]:
    """Start the live engines and bind the listener; ``kept``: journal answered commands
    (``[wyoming] keep``). Raises ConfigError for a busy port or a default provider that
    cannot answer voice commands."""
    from stenod.adapters.wyoming.info import describe  # the wyoming package only when it is on
    from stenod.adapters.wyoming.metrics import WyomingMetrics
    from stenod.adapters.wyoming.server import ListenerSettings, WyomingServer
    from stenod.adapters.wyoming.session import SessionLimits

    assert settings.listen is not None
    host, port = parse_listen(settings.listen, key="wyoming.listen", example="0.0.0.0:10300")
    defaults = CommandDefaults(
        provider=settings.provider or "whisper",
        language=settings.language or None,
        beam_size=settings.beam_size,
        vad_filter=settings.vad_filter,
        workers=settings.workers,
    )
    commands = VoiceCommands(providers, defaults)
    if not any(model.name == defaults.provider for model in commands.models()):
        _, why_not = providers()
        why = why_not.get(defaults.provider, "no such provider is installed")
        raise ConfigError(f"wyoming.provider = {defaults.provider!r} cannot answer voice commands: {why}")
    await commands.start()
    metrics = WyomingMetrics(registry)
    name = settings.zeroconf_name or f"stenod-{socket.gethostname()}"
    server = WyomingServer(
        ListenerSettings(
            host=host,
            port=port,
            zeroconf_name=name if settings.zeroconf else None,
            max_clients=settings.max_clients,
            limits=SessionLimits(max_command_seconds=settings.max_command_seconds, streaming=settings.streaming),
        ),
        commands,
        lambda: describe(commands.models(), streaming=settings.streaming),
        metrics,
        kept.keep if kept is not None else None,
    )
    try:
        await server.bind()
    except OSError as exc:
        raise ConfigError(f"wyoming.listen = {settings.listen!r}: cannot listen there: {exc.strerror}") from exc
    return WyomingParts(server.run, server.healthy), commands
