"""Make a recording fit NanoGPT's direct-upload cap: transcode to compact mono MP3 and,
when that is still too big, cut it at quiet points into pieces.

Everything here is blocking CPU work on untrusted files (PyAV); it runs in the core's
memory-capped child process (:mod:`.preparation`), never in the daemon. Decoding holds one
chunk at a time and stops once the audio passes ``max_seconds`` (``too_long``): a small
file that decodes to hours costs a bounded moment of that child. The plan (where the
pieces start) is deterministic for a given input, so a restarted daemon rebuilds
byte-identical pieces from the checkpointed plan.
"""

from __future__ import annotations

import array
import operator
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO

import av

from stenod.provider import PermanentError, audio_too_long

SAMPLE_RATE = 16_000
BIT_RATE = 24_000  # MPEG-2 layer III at 16 kHz mono: plenty for speech recognition
WINDOW_SAMPLES = SAMPLE_RATE // 10  # energy is measured per 100 ms
UPLOAD_FORMATS = frozenset({"mp3", "wav", "m4a", "ogg", "aac"})
_HEADROOM = 0.9  # bitrate control is approximate; keep pieces well under the cap
_CONTAINER_OVERHEAD_BYTES = 8_192

Opener = Callable[[], IO[bytes]]


@dataclass(frozen=True, slots=True)
class Piece:
    """A stretch of the recording, in samples at :data:`SAMPLE_RATE`."""

    start: int
    length: int

    @property
    def offset_seconds(self) -> float:
        return self.start / SAMPLE_RATE

    @property
    def seconds(self) -> float:
        return self.length / SAMPLE_RATE


@dataclass(frozen=True, slots=True)
class Analysis:
    """Total length of the decoded recording and its energy per 100 ms window."""

    total_samples: int
    energies: tuple[float, ...]


def max_piece_samples(max_upload_bytes: int) -> int:
    """How many samples fit in one upload once encoded at :data:`BIT_RATE`."""
    usable = max_upload_bytes * _HEADROOM - _CONTAINER_OVERHEAD_BYTES
    return max(WINDOW_SAMPLES, int(usable / (BIT_RATE / 8) * SAMPLE_RATE))


def probe_seconds(open_source: Opener) -> float | None:
    """The container's stated duration in seconds, or None when it does not say."""
    try:
        with open_source() as raw, av.open(raw, mode="r") as container:
            if container.duration is not None:
                return container.duration / 1_000_000
            return None
    except av.FFmpegError as exc:
        raise PermanentError(f"cannot read the recording: {exc}", code="undecodable_audio") from exc


def analyse(open_source: Opener, *, max_seconds: float, label: str) -> Analysis:
    """Decode the whole recording once and measure its energy per window.

    Raises PermanentError if it is not decodable audio, ``too_long`` once it decodes to more
    than ``max_seconds``.
    """
    energies: list[float] = []
    pending = bytearray()
    total = 0
    for chunk in _pcm_chunks(open_source):
        if total > max_seconds * SAMPLE_RATE:
            raise audio_too_long("nanogpt", label, total / SAMPLE_RATE, max_seconds, declared=False)
        total += len(chunk) // 2
        pending += chunk
        whole = len(pending) // (WINDOW_SAMPLES * 2) * WINDOW_SAMPLES * 2
        for at in range(0, whole, WINDOW_SAMPLES * 2):
            energies.append(_energy(pending[at : at + WINDOW_SAMPLES * 2]))
        del pending[:whole]
    if pending:
        energies.append(_energy(pending))
    if total == 0:
        raise PermanentError("the recording contains no audio samples", code="empty_audio")
    return Analysis(total, tuple(energies))


def plan_pieces(analysis: Analysis, max_samples: int) -> tuple[Piece, ...]:
    """Cut the recording into pieces of at most ``max_samples``, each cut placed in the
    quietest 100 ms window of the last quarter (at most 30 s) before the limit."""
    total = analysis.total_samples
    search = max(WINDOW_SAMPLES, min(30 * SAMPLE_RATE, max_samples // 4))
    starts = [0]
    while total - starts[-1] > max_samples:
        limit = starts[-1] + max_samples
        first = max(starts[-1] + 1, limit - search) // WINDOW_SAMPLES + 1
        last = limit // WINDOW_SAMPLES - 1
        candidates = range(first, last + 1)
        if candidates:
            # Latest window among the quietest: keeps pieces as long as allowed.
            quietest = min(candidates, key=lambda w: (analysis.energies[w], -w))
            cut = quietest * WINDOW_SAMPLES + WINDOW_SAMPLES // 2
        else:
            cut = limit
        starts.append(cut)
    ends = [*starts[1:], total]
    return tuple(Piece(start, end - start) for start, end in zip(starts, ends, strict=True))


def encode_pieces(open_source: Opener, pieces: tuple[Piece, ...], directory: Path) -> list[Path]:
    """Encode each piece as mono MP3 into ``directory``; one decoding pass.

    Raises PermanentError if the recording cannot be decoded.
    """
    paths = [directory / f"piece-{index:04d}.mp3" for index in range(len(pieces))]
    encoders = iter([_PieceEncoder(path) for path in paths])
    current = next(encoders)
    boundaries = [piece.start + piece.length for piece in pieces]
    index, position = 0, 0
    try:
        for chunk in _pcm_chunks(open_source):
            if index == len(pieces):
                break  # the rest (if the file grew a tail) is never decoded
            view = memoryview(chunk)
            while view and index < len(pieces):
                take = min(len(view) // 2, boundaries[index] - position)
                current.write(view[: take * 2])
                view = view[take * 2 :]
                position += take
                if position == boundaries[index]:
                    current.close()
                    index += 1
                    current = next(encoders, current)
    finally:
        current.close()
    if index < len(pieces):
        raise PermanentError("the recording decoded shorter than when it was first measured", code="input_changed")
    return paths


def _pcm_chunks(open_source: Opener) -> Iterator[bytes]:
    """The recording as mono signed 16-bit PCM at :data:`SAMPLE_RATE`."""
    try:
        with open_source() as raw, av.open(raw, mode="r") as container:
            if not container.streams.audio:
                raise PermanentError("the file has no audio stream", code="no_audio_stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    yield bytes(out.planes[0])[: out.samples * 2]
            for out in resampler.resample(None):
                yield bytes(out.planes[0])[: out.samples * 2]
    except av.FFmpegError as exc:
        raise PermanentError(f"cannot decode the recording: {exc}", code="undecodable_audio") from exc


def _energy(pcm: bytes | bytearray) -> float:
    samples = array.array("h")
    samples.frombytes(bytes(pcm))
    # Every 4th sample is enough to rank windows by loudness, and 4x cheaper.
    sparse = samples[::4]
    total: int = sum(map(operator.mul, sparse, sparse))
    return total / max(1, len(sparse))


class _PieceEncoder:
    """One MP3 output file fed with PCM chunks."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._container: av.container.OutputContainer | None = None
        self._written = 0

    def write(self, pcm: memoryview) -> None:
        samples = len(pcm) // 2
        if samples == 0:
            return
        if self._container is None:
            self._container = av.open(str(self._path), mode="w", format="mp3")
            stream = self._container.add_stream("libmp3lame", rate=SAMPLE_RATE, layout="mono")
            stream.bit_rate = BIT_RATE
        frame = av.AudioFrame(format="s16", layout="mono", samples=samples)
        frame.planes[0].update(bytes(pcm))
        frame.sample_rate = SAMPLE_RATE
        frame.time_base = Fraction(1, SAMPLE_RATE)
        frame.pts = self._written
        self._written += samples
        stream = self._container.streams.audio[0]
        for packet in stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        if self._container is None:
            return
        stream = self._container.streams.audio[0]
        for packet in stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        self._container = None
