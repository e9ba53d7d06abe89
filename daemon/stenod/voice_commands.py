"""Voice commands: which providers answer them, and answering one in memory.

The Wyoming listener (and any other live interface) asks this service, never a provider
directly: it picks the provider a command names (or the default), checks the language,
and runs the provider's :class:`~stenod.live.LiveTranscriber` capability. Nothing here
touches the journal: a command is private unless ``[wyoming] keep`` says otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog

from stenod.errors import PermanentError
from stenod.live import LiveAudio, LiveTranscriber
from stenod.provider import Provider, Segment, Task, Transcript

__all__ = ["CommandDefaults", "LiveModel", "VoiceCommands"]

log = structlog.get_logger("stenod.voice")

ProvidersView = Callable[[], tuple[Mapping[str, Provider], Mapping[str, str]]]


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


class VoiceCommands:
    """Answers voice commands with the configured providers that can (see :meth:`models`)."""

    def __init__(self, providers: ProvidersView, defaults: CommandDefaults) -> None:
        self._providers = providers
        self._defaults = defaults

    def models(self) -> list[LiveModel]:
        """The providers that transcribe voice commands, the default first."""
        available, _ = self._providers()
        live = {name: p for name, p in available.items() if _is_live(p)}
        order = sorted(live, key=lambda name: (name != self._defaults.provider, name))
        return [
            LiveModel(
                name=name,
                languages=tuple(sorted(live[name].limits.languages or ())),
                description=f"stenod provider {name}" + (" (offline)" if name == "whisper" else ""),
            )
            for name in order
        ]

    async def start(self) -> None:
        """Get every provider that answers commands ready (the live worker of whisper loaded
        and warm). Called once at start, before the listener opens."""
        available, _ = self._providers()
        for name, provider in available.items():
            if _is_live(provider):
                assert isinstance(provider, LiveTranscriber)
                await provider.start_live()
                log.info("voice.provider_ready", provider=name)

    def resolve(self, name: str | None) -> tuple[str, Provider]:
        """The provider a command names (None or "": the default). Raises PermanentError
        with what is wrong and what serves commands here."""
        wanted = name or self._defaults.provider
        available, unavailable = self._providers()
        provider = available.get(wanted)
        serving = ", ".join(m.name for m in self.models()) or "none"
        if provider is None:
            if wanted in unavailable:
                raise PermanentError(
                    f"the provider {wanted!r} is unavailable: {unavailable[wanted]}", code="provider_unavailable"
                )
            raise PermanentError(
                f"no provider named {wanted!r} is configured here; voice commands are served by: {serving}",
                code="unknown_provider",
            )
        if not _is_live(provider):
            raise PermanentError(
                f"the provider {wanted!r} transcribes files but not voice commands; use one of: {serving}",
                code="not_live",
            )
        return wanted, provider

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
        provider_name, provider = self.resolve(name)
        language = language or self._defaults.language
        if language and not provider.limits.accepts(language):
            raise PermanentError(
                f"{provider_name} does not understand the language {language!r}", code="unsupported_language"
            )
        if not pcm:
            return Transcript(text="", language=language, duration=0.0, provider=provider_name)
        audio = LiveAudio(pcm, language, self._defaults.beam_size, self._defaults.vad_filter)
        assert isinstance(provider, LiveTranscriber)  # resolve() admits no other
        return await provider.transcribe_live(audio, on_segment)


def _is_live(provider: Provider) -> bool:
    return isinstance(provider, LiveTranscriber) and Task.TRANSCRIBE in provider.limits.tasks
