"""Speech recognition of a PCM stream with PocketSphinx, one utterance at a time.

Runs in the worker process. Voice activity detection (PocketSphinx's ``Endpointer``)
splits the stream at silences; each stretch of speech is decoded as one utterance and
cut after ``max_piece_seconds`` even without a pause, so memory stays flat (at most one
piece of PCM, ~1 MB for 30 s) however long the file is. Silence is never decoded.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from pocketsphinx import Decoder, Endpointer  # type: ignore[import-untyped]

__all__ = ["Piece", "Recognizer", "WordTiming"]

_SAMPLE_RATE = 16000
_FRAMES_PER_SECOND = 100  # PocketSphinx's feature frame rate (-frate)
_BATCH_BYTES = 16000  # half a second per decoder call
_ALTERNATE_PRONUNCIATION = re.compile(r"\(\d+\)$")


@dataclass(frozen=True, slots=True)
class WordTiming:
    text: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Piece:
    """One decoded utterance; times are seconds from the start of the file."""

    start: float
    end: float
    words: tuple[WordTiming, ...]

    @property
    def text(self) -> str:
        return " ".join(w.text for w in self.words)


def clean_word(token: str) -> str | None:
    """The spoken word behind a decoder token, or None for silence, sentence markers
    and fillers (``<s>``, ``</s>``, ``<sil>``, ``[NOISE]``, ``++BREATH++``).
    ``word(2)`` (an alternate pronunciation) becomes ``word``."""
    if not token or token.startswith(("<", "[", "+")):
        return None
    return _ALTERNATE_PRONUNCIATION.sub("", token) or None


class Recognizer:
    """A PocketSphinx decoder with the English model shipped in the wheel.

    Building one loads the model (a fraction of a second, ~40 MB): build it once per
    worker process and reuse it for every file. Each file starts from the model's
    initial cepstral mean, so a transcript never depends on the files decoded before.
    """

    def __init__(self, *, max_piece_seconds: float = 30.0) -> None:
        self._decoder = Decoder(samprate=_SAMPLE_RATE, loglevel="FATAL")
        self._initial_cmn = self._decoder.get_cmn()
        self._max_piece_bytes = int(max_piece_seconds * _SAMPLE_RATE) * 2

    def pieces(
        self,
        pcm: Iterable[bytes],
        *,
        on_audio: Callable[[float], None] | None = None,
        audio_report_seconds: float = 10.0,
    ) -> Iterator[Piece]:
        """Decode 16 kHz mono s16le ``pcm`` and yield each utterance as it ends.

        ``on_audio(seconds)`` is called with the position reached at least every
        ``audio_report_seconds`` of audio, speech or not (a heartbeat for the caller's
        watchdog and progress).
        """
        self._decoder.set_cmn(self._initial_cmn)
        endpointer = Endpointer(sample_rate=_SAMPLE_RATE)
        frame_bytes = endpointer.frame_bytes
        report_every = int(audio_report_seconds * _SAMPLE_RATE) * 2
        utterance = _Utterance(self._decoder, self._max_piece_bytes)
        pending = bytearray()
        consumed = 0
        next_report = report_every
        for chunk in pcm:
            pending += chunk
            usable = len(pending) - len(pending) % frame_bytes
            for offset in range(0, usable, frame_bytes):
                speech = endpointer.process(bytes(pending[offset : offset + frame_bytes]))
                if speech is not None:
                    yield from utterance.feed(speech, endpointer.speech_start)
                    if not endpointer.in_speech:
                        yield from utterance.finish()
            del pending[:usable]
            consumed += usable
            if on_audio is not None and consumed >= next_report:
                on_audio(consumed / 2 / _SAMPLE_RATE)
                next_report = consumed + report_every
        if endpointer.in_speech or pending:
            # end_stream refuses an empty buffer (IndexError), which is what is left when a
            # file cut off mid-speech ends on a frame boundary; one silent sample flushes
            # the speech the endpointer still holds.
            speech = endpointer.end_stream(bytes(pending) or b"\0\0")
            if speech:
                yield from utterance.feed(speech, endpointer.speech_start)
        yield from utterance.finish()
        if on_audio is not None:
            on_audio((consumed + len(pending)) / 2 / _SAMPLE_RATE)


class _Utterance:
    """The speech of the current utterance, buffered (at most ``max_bytes``) and
    decoded when it ends at a pause or reaches the cap."""

    def __init__(self, decoder: Decoder, max_bytes: int) -> None:
        self._decoder = decoder
        self._max_bytes = max_bytes
        self._buffer = bytearray()
        self._start: float | None = None
        self._resume_at: float | None = None  # where speech continues after a cut at the cap
        self._primed = False

    def feed(self, speech: bytes, speech_start: float) -> Iterator[Piece]:
        if self._start is None:
            # The endpointer's speech_start is where the whole stretch of speech began,
            # which after a cut at the cap lies in the previous piece.
            self._start = speech_start if self._resume_at is None else self._resume_at
            self._resume_at = None
        self._buffer += speech
        if len(self._buffer) >= self._max_bytes:
            # No pause for max_piece_seconds: cut here so memory and search stay small.
            resume_at = self._start + len(self._buffer) / 2 / _SAMPLE_RATE
            yield from self.finish()
            self._resume_at = resume_at

    def finish(self) -> Iterator[Piece]:
        self._resume_at = None
        if self._start is None:
            return
        start, speech = self._start, bytes(self._buffer)
        self._start = None
        self._buffer.clear()
        if not self._primed:
            # Live cepstral mean normalisation starts from the model's generic mean,
            # which fits a given recording badly: the first utterance came out at
            # about twice the word error rate of the rest (measured on synthetic
            # speech). A feature-only pass (no search) adapts the mean first.
            self._primed = True
            self._decode(speech, no_search=True)
        self._decode(speech, no_search=False)
        end = start + len(speech) / 2 / _SAMPLE_RATE
        words = tuple(
            WordTiming(
                text,
                round(start + seg.start_frame / _FRAMES_PER_SECOND, 3),
                round(min(end, start + (seg.end_frame + 1) / _FRAMES_PER_SECOND), 3),
            )
            for seg in self._decoder.seg()
            if (text := clean_word(seg.word)) is not None
        )
        if words:
            yield Piece(round(start, 3), round(end, 3), words)

    def _decode(self, speech: bytes, *, no_search: bool) -> None:
        self._decoder.start_utt()
        for offset in range(0, len(speech), _BATCH_BYTES):
            self._decoder.process_raw(speech[offset : offset + _BATCH_BYTES], no_search, False)
        self._decoder.end_utt()
