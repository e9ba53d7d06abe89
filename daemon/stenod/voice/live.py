"""Live transcription: a short utterance held in memory, answered while someone waits.

A voice command (Home Assistant's Wyoming protocol) is 1–5 s of audio and never becomes a
job: no file, no journal row, no batch pipeline. A provider that can answer one quickly
implements :class:`LiveTranscriber` beside the batch-job methods; ``stenod.provider``
re-exports both names for plugins.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

if TYPE_CHECKING:  # stenod.provider re-exports this module: no import back at run time
    from stenod.provider import Segment, Transcript

__all__ = ["LiveAudio", "LiveTranscriber"]


@dataclass(frozen=True, slots=True)
class LiveAudio:
    """One utterance: 16 kHz, 16-bit signed little-endian, mono PCM, with what to do with it.

    ``language`` is a BCP-47 tag (``en``, ``de-DE``) or None to detect it. ``beam_size`` and
    ``vad_filter`` are the listener's decoding choices; None leaves them to the provider.
    """

    SAMPLE_RATE: ClassVar[int] = 16000
    SAMPLE_WIDTH: ClassVar[int] = 2

    pcm: bytes
    language: str | None = None
    beam_size: int | None = None
    vad_filter: bool | None = None

    @property
    def duration(self) -> float:
        """Seconds of audio."""
        return len(self.pcm) / (self.SAMPLE_RATE * self.SAMPLE_WIDTH)


@runtime_checkable
class LiveTranscriber(Protocol):
    """Optional capability of a provider: transcribe an utterance in memory, now.

    Both methods may raise :class:`~stenod.provider.PermanentError` (an unknown language,
    audio the engine cannot take) or :class:`~stenod.provider.RetryableError` (the engine
    is down or stopping); the caller reports them to the person waiting, it does not retry.
    """

    async def start_live(self, workers: int = 1) -> None:
        """Called once at daemon start when a live listener is on, after ``start``: get the
        engine ready for commands and keep it ready (no idle unload) until ``aclose``.
        ``workers``: how many commands the listener wants decoded at once (``[wyoming]
        workers``); an engine that cannot run several ignores it."""
        ...

    async def transcribe_live(
        self, audio: LiveAudio, on_segment: Callable[[Segment], None] | None = None
    ) -> Transcript:
        """Transcribe ``audio`` and return the transcript; ``on_segment`` (called on the
        event loop) receives each piece as soon as it is decoded. Cancelling the call (the
        client went away) must stop the work or let it finish unseen; it must not leak."""
        ...
