"""Voice commands: which providers answer them, and answering one in memory.

The Wyoming listener (and any other live interface) asks this service, never a provider
directly: it picks the provider a command names (or the default), checks the language,
and runs it as a :class:`~stenod.voice.live.LiveTranscriber` (the provider's own, or its batch
API run in memory: :mod:`stenod.voice.live_batch`). Nothing here touches the journal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog

from stenod.errors import PermanentError
from stenod.provider import Limits, Segment, Transcript
from stenod.voice.live import LiveAudio, LiveTranscriber

__all__ = ["CommandDefaults", "LiveEntry", "LiveModel", "VoiceCommands"]

log = structlog.get_logger("stenod.voice")


@dataclass(frozen=True, slots=True)
class LiveEntry:
    """A provider that can answer voice commands: how, and what it accepts."""

    live: LiveTranscriber
    limits: Limits
    description: str


LiveView = Callable[[], tuple[Mapping[str, LiveEntry], Mapping[str, str]]]
"""The providers that answer commands now, and why each other known provider does not."""


@dataclass(frozen=True, slots=True)
class LiveModel:
    """A provider that answers voice commands, as a live interface describes it."""

    name: str
    languages: tuple[str, ...]
    description: str


@dataclass(frozen=True, slots=True)
class CommandDefaults:
    """The listener's choices for a command that does not make them."""

    provider: str = "whisper"
    language: str | None = None  # None: detect
    beam_size: int | None = None
    vad_filter: bool = False
    workers: int = 1  # commands a local engine decodes at once


class VoiceCommands:
    """Answers voice commands with the providers that can (see :meth:`models`)."""

    def __init__(self, providers: LiveView, defaults: CommandDefaults) -> None:
        self._providers = providers
        self._defaults = defaults

    def models(self) -> list[LiveModel]:
        """The providers that answer voice commands, the default first."""
        live, _ = self._providers()
        order = sorted(live, key=lambda name: (name != self._defaults.provider, name))
        return [
            LiveModel(name, tuple(sorted(live[name].limits.languages or ())), live[name].description) for name in order
        ]

    async def start(self) -> None:
        """Get every provider that answers commands ready (whisper's live worker loaded and
        warm). Called once at start, before the listener opens."""
        live, _ = self._providers()
        for name, entry in live.items():
            await entry.live.start_live(self._defaults.workers)
            log.info("voice.provider_ready", provider=name)

    def resolve(self, name: str | None) -> tuple[str, LiveEntry]:
        """The provider a command names (None or "": the default). Raises PermanentError
        with what is wrong and what serves commands here."""
        wanted = name or self._defaults.provider
        live, why_not = self._providers()
        if (entry := live.get(wanted)) is not None:
            return wanted, entry
        serving = ", ".join(m.name for m in self.models()) or "none"
        if wanted in why_not:
            raise PermanentError(
                f"the provider {wanted!r} cannot answer voice commands: {why_not[wanted]}; use one of: {serving}",
                code="provider_unavailable",
            )
        raise PermanentError(
            f"no provider named {wanted!r} is configured here; voice commands are served by: {serving}",
            code="unknown_provider",
        )

    async def transcribe(
        self,
        pcm: bytes,
        *,
        name: str | None = None,
        language: str | None = None,
        on_segment: Callable[[Segment], None] | None = None,
    ) -> Transcript:
        """Transcribe one command (16 kHz, 16-bit, mono PCM). Raises PermanentError (an
        unknown provider or language) or RetryableError (the provider is down), each with a
        message for the person who spoke."""
        provider, entry = self.resolve(name)
        language = language or self._defaults.language
        if language and not entry.limits.accepts(language):
            raise PermanentError(
                f"{provider} does not understand the language {language!r}", code="unsupported_language"
            )
        if not pcm:
            return Transcript(text="", language=language, duration=0.0, provider=provider)
        audio = LiveAudio(pcm, language, self._defaults.beam_size, self._defaults.vad_filter)
        return await entry.live.transcribe_live(audio, on_segment)
