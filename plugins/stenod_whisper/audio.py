"""Decoding any common audio file into the 16 kHz mono float samples Whisper takes.

Runs in the worker process (libav parses untrusted files; a crash there must not take
the daemon down). The file is read through an already opened file object, so the
core's symlink and inode checks (``BatchItem.open``) apply.

Damaged input policy: what a person wants from a recording that was cut short or has
a bad stretch is the text of everything that *can* be heard. So undecodable packets
are skipped, a file that ends before its header says it should is transcribed up to
where it ends, and :attr:`PcmStream.problems` tells the caller what was lost. Only a
file from which no audio at all can be decoded fails (``corrupt_audio``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from types import TracebackType
from typing import IO, Self

import av
import av.container
from av.audio.stream import AudioStream

from stenod.provider import PermanentError

__all__ = ["SAMPLE_RATE", "PcmStream"]

SAMPLE_RATE = 16000
"""Output rate: Whisper's feature extractor works on 16 kHz audio."""

_BYTES_PER_SAMPLE = 4  # float32
_MAX_CONSECUTIVE_BAD_PACKETS = 200  # beyond this the rest of the file is noise to libav
_TRUNCATION_TOLERANCE_SECONDS = 1.0


class PcmStream:
    """The audio of one open file as 16 kHz mono float32 chunks.

    Construction opens the container and its first audio stream; :meth:`chunks`
    decodes lazily. Raises PermanentError with code ``empty_file``, ``not_audio``,
    ``no_audio_stream``, ``unsupported_codec`` or ``input_unreadable``.
    """

    def __init__(self, fileobj: IO[bytes], label: str) -> None:
        self.label = label
        self.decoded_seconds = 0.0
        self.bad_packets = 0
        self._fileobj = fileobj
        self._size = os.fstat(fileobj.fileno()).st_size
        if self._size == 0:
            raise PermanentError(f"{label} is empty (0 bytes)", code="empty_file")
        try:
            self._container: av.container.InputContainer = av.open(fileobj, mode="r", metadata_errors="replace")
        except av.error.EOFError as exc:
            # A recognised container that ends before its first packet: a cut-off file.
            raise self._corrupt(exc) from exc
        except av.FFmpegError as exc:
            raise PermanentError(
                f"{label} is not a recognisable audio file ({_reason(exc)}); it may be damaged, "
                "incomplete or not audio at all",
                code="not_audio",
            ) from exc
        except OSError as exc:
            raise PermanentError(f"cannot read {label}: {exc}", code="input_unreadable") from exc
        try:
            self._stream = self._audio_stream()
        except BaseException:
            self._container.close()
            raise

    def _audio_stream(self) -> AudioStream:
        streams = self._container.streams.audio
        if not streams:
            kinds: list[str] = sorted({s.type for s in self._container.streams}) or ["no"]
            raise PermanentError(
                f"{self.label} has no audio stream (it holds {', '.join(kinds)} streams in a "
                f"{self._container.format.name} container)",
                code="no_audio_stream",
            )
        stream = streams[0]
        if stream.codec_context is None or stream.codec_context.name in ("", "none"):
            raise PermanentError(
                f"{self.label} uses an audio codec this system cannot decode", code="unsupported_codec"
            )
        return stream

    @property
    def declared_seconds(self) -> float | None:
        """How long the file says it is (header or container index), if it says."""
        if self._stream.duration is not None and self._stream.time_base is not None:
            return float(self._stream.duration * self._stream.time_base)
        if self._container.duration is not None:
            return self._container.duration / av.time_base
        return None

    @property
    def read_fraction(self) -> float:
        """How far through the file's bytes decoding has got, 0..1."""
        try:
            return min(1.0, self._fileobj.tell() / self._size)
        except (OSError, ValueError):
            return 0.0

    @property
    def problems(self) -> list[str]:
        """What was lost, for a person: truncation and skipped damaged data."""
        notes = []
        declared = self.declared_seconds
        if (
            declared is not None
            and self.decoded_seconds + max(_TRUNCATION_TOLERANCE_SECONDS, 0.02 * declared) < declared
        ):
            notes.append(
                f"{self.label} ends early: only {self.decoded_seconds:.1f} s of the "
                f"{declared:.1f} s its header announces could be decoded (truncated file?)"
            )
        if self.bad_packets:
            notes.append(f"{self.label}: skipped {self.bad_packets} damaged audio packet(s)")
        return notes

    def chunks(self) -> Iterator[bytes]:
        """Yield the PCM in chunks of a few thousand samples, in order.

        Raises PermanentError ``corrupt_audio`` at the end if nothing could be decoded,
        ``input_unreadable`` if reading the file fails.
        """
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        try:
            for frame in self._frames():
                for out in resampler.resample(frame):
                    yield self._pcm(out)
            for out in resampler.resample(None):
                yield self._pcm(out)
        except av.FFmpegError as exc:
            self.bad_packets += 1
            if not self.decoded_seconds:
                raise self._corrupt(exc) from exc
        except OSError as exc:
            raise PermanentError(f"cannot read {self.label}: {exc}", code="input_unreadable") from exc
        if not self.decoded_seconds:
            raise self._corrupt(None)

    def _frames(self) -> Iterator[av.AudioFrame]:
        consecutive_bad = 0
        for packet in self._demux():
            try:
                frames = packet.decode()
            except av.FFmpegError:
                self.bad_packets += 1
                consecutive_bad += 1
                if consecutive_bad > _MAX_CONSECUTIVE_BAD_PACKETS:
                    return
                continue
            consecutive_bad = 0
            yield from frames

    def _demux(self) -> Iterator[av.Packet[AudioStream]]:
        demuxer = self._container.demux(self._stream)
        while True:
            try:
                packet = next(demuxer)
            except StopIteration:
                return
            except av.error.EOFError:
                return
            except av.FFmpegError:
                # A damaged container (e.g. cut inside a packet): stop here and keep
                # what decoded; libav cannot resynchronise every format.
                self.bad_packets += 1
                return
            yield packet

    def _pcm(self, frame: av.AudioFrame) -> bytes:
        self.decoded_seconds += frame.samples / SAMPLE_RATE
        return bytes(frame.planes[0])[: frame.samples * _BYTES_PER_SAMPLE]

    def _corrupt(self, exc: Exception | None) -> PermanentError:
        detail = f" ({_reason(exc)})" if exc is not None else ""
        return PermanentError(
            f"{self.label} contains no decodable audio{detail}: it is damaged, truncated or empty",
            code="corrupt_audio",
        )

    def close(self) -> None:
        """Release libav's resources (the file object belongs to the caller)."""
        self._container.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, av.FFmpegError) and exc.strerror:
        return str(exc.strerror)
    return str(exc) or type(exc).__name__
