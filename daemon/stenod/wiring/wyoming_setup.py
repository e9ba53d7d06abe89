"""Wiring of the Wyoming listener (``[wyoming] listen``): the voice-command service over
the configured providers, their live engines started, the socket bound, health and metrics."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from stenod.errors import ConfigError
from stenod.provider import Provider
from stenod.settings import WyomingSettings, parse_listen
from stenod.voice_commands import CommandDefaults, VoiceCommands

__all__ = ["WyomingParts", "build_wyoming"]

ProvidersView = Callable[[], tuple[Mapping[str, Provider], Mapping[str, str]]]


@dataclass(frozen=True, slots=True)
class WyomingParts:
    """What the composition root runs and checks."""

    run: Callable[[asyncio.Event], Coroutine[Any, Any, None]]
    healthy: Callable[[], Awaitable[bool]]


async def build_wyoming(
    settings: WyomingSettings, providers: ProvidersView, registry: CollectorRegistry, *, default_provider: str
) -> tuple[WyomingParts, VoiceCommands]:
    """Start the live engines and bind the listener. Raises ConfigError for a busy port or
    a default provider that cannot answer voice commands."""
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
    )
    commands = VoiceCommands(providers, defaults)
    if not any(model.name == defaults.provider for model in commands.models()):
        available, unavailable = providers()
        why = unavailable.get(defaults.provider) or (
            "it transcribes files only" if defaults.provider in available else "no such provider is configured"
        )
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
    )
    try:
        await server.bind()
    except OSError as exc:
        raise ConfigError(f"wyoming.listen = {settings.listen!r}: cannot listen there: {exc.strerror}") from exc
    return WyomingParts(server.run, server.healthy), commands
