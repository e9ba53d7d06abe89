"""A file's audio in bounded windows, and its length held to ``max_audio_seconds``.

A few hundred KiB of Opus can hold hours of audio: decoded whole, a file could take a
worker's memory by its duration, not its size. So a worker holds at most one window of
decoded samples (:data:`WINDOW_SECONDS`: 38 MB of float32 at 16 kHz), transcribes it and
lets it go; language detection decodes only the first 30 s. A file whose header says it
is longer than the limit is refused before any decoding, one whose header lies when the
decoded audio passes the limit (``too_long``); either way no transcript comes out, so
nothing is half-written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from stenod.provider import audio_too_long
from stenod_whisper.audio import SAMPLE_RATE, PcmStream

__all__ = ["DETECT_SECONDS", "WINDOW_SECONDS", "Window", "head", "windows"]

WINDOW_SECONDS = 600.0
"""Decoded audio a worker holds at once; shorter files are one window, as before."""
DETECT_SECONDS = 30.0
"""What language detection looks at (Whisper's own detection window)."""

_BYTES = 4  # float32
_QUIET_SEARCH_SECONDS = 5.0  # a window ends at the quietest 50 ms of its last seconds
_QUIET_FRAME = SAMPLE_RATE // 20

Samples = np.ndarray[Any, np.dtype[np.float32]]


@dataclass(frozen=True, slots=True)
class Window:
    """``samples`` of the file starting ``offset`` seconds in."""

    offset: float
    samples: Samples

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def check_declared(audio: PcmStream, max_seconds: float) -> None:
    """Refuse at once a file whose header announces more than ``max_seconds``."""
    declared = audio.declared_seconds
    if declared is not None and declared > max_seconds:
        raise audio_too_long("whisper", audio.label, declared, max_seconds, declared=True)


def head(audio: PcmStream, seconds: float = DETECT_SECONDS) -> Samples:
    """The first ``seconds`` of the audio; the rest of the file is never decoded."""
    pcm = bytearray()
    wanted = int(seconds * SAMPLE_RATE) * _BYTES
    for chunk in audio.chunks():
        pcm += chunk
        if len(pcm) >= wanted:
            break
    return np.frombuffer(bytes(pcm[:wanted]), dtype=np.float32)


def windows(
    audio: PcmStream,
    *,
    max_seconds: float,
    on_progress: Callable[[float], None],
    window_seconds: float = WINDOW_SECONDS,
    report_seconds: float = 30.0,
) -> Iterator[Window]:
    """The audio in consecutive windows of about ``window_seconds``, each cut at a quiet
    moment so a word is rarely split. Raises PermanentError ``too_long`` (before the first
    window when the header says so), and those of :meth:`PcmStream.chunks`."""
    check_declared(audio, max_seconds)
    limit = int(window_seconds * SAMPLE_RATE) * _BYTES
    pcm = bytearray()
    offset = 0
    reported = 0.0
    for chunk in audio.chunks():
        if audio.decoded_seconds > max_seconds:
            raise audio_too_long("whisper", audio.label, audio.decoded_seconds, max_seconds, declared=False)
        pcm += chunk
        if audio.decoded_seconds - reported >= report_seconds:
            reported = audio.decoded_seconds
            declared = audio.declared_seconds
            on_progress(min(1.0, reported / declared) if declared else audio.read_fraction)
        if len(pcm) >= limit:
            samples = np.frombuffer(bytes(pcm), dtype=np.float32)
            cut = _quiet_cut(samples)
            del pcm[: cut * _BYTES]
            yield Window(offset / SAMPLE_RATE, samples[:cut])
            offset += cut
    if pcm:
        yield Window(offset / SAMPLE_RATE, np.frombuffer(bytes(pcm), dtype=np.float32))


def _quiet_cut(samples: Samples) -> int:
    """Where to end a window: the start of the quietest frame in its last seconds."""
    search = min(len(samples), int(_QUIET_SEARCH_SECONDS * SAMPLE_RATE)) // _QUIET_FRAME * _QUIET_FRAME
    if search == 0:
        return len(samples)
    tail = samples[len(samples) - search :].reshape(-1, _QUIET_FRAME)
    quietest = int(np.argmin(np.square(tail).mean(axis=1)))
    return len(samples) - search + quietest * _QUIET_FRAME or len(samples)
