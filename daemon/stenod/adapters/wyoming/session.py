"""One Wyoming connection: ``describe`` → ``info``; ``transcribe`` + ``audio-start`` /
``audio-chunk``… / ``audio-stop`` → ``transcript`` (after ``transcript-start`` /
``-chunk``… / ``-stop`` when streaming is on), or an ``error`` a person can read.

Audio of any rate, width and channel count is converted as it arrives (the ``wyoming``
package's converter) into what the providers take: 16 kHz, 16-bit, mono. It is held in
memory only, bounded by ``max_command_seconds``, and dropped when the connection goes.
With ``[wyoming] keep``, an answered command's transcript (never its audio) is journaled
after the answer went out (:mod:`stenod.voice.kept`).
"""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

import structlog
from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.error import Error
from wyoming.event import Event, async_read_event, async_write_event
from wyoming.info import Describe, Info

from stenod import provider
from stenod.errors import JobError
from stenod.provider import Segment
from stenod.voice.commands import VoiceCommands
from stenod.voice.kept import HeardCommand
from stenod.voice.live import LiveAudio

from .metrics import WyomingMetrics

with warnings.catch_warnings():  # it converts with audioop (deprecated since 3.11, fine until 3.13)
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
    from wyoming.audio import AudioChunk, AudioChunkConverter, AudioStart, AudioStop

__all__ = ["SessionLimits", "WyomingSession"]

log = structlog.get_logger("stenod.wyoming")

_BYTES_PER_SECOND = LiveAudio.SAMPLE_RATE * LiveAudio.SAMPLE_WIDTH
# One event's data or payload: a chunk of 30 s of 48 kHz 32-bit stereo fits. The package
# reads whatever length a header announces; a larger one ends the session instead.
_MAX_EVENT_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class SessionLimits:
    max_command_seconds: float
    streaming: bool


class WyomingSession:
    """Serves one client until it disconnects or :meth:`close` is called."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        commands: VoiceCommands,
        info: Callable[[], Info],
        metrics: WyomingMetrics,
        limits: SessionLimits,
        keep: Callable[[HeardCommand], Awaitable[object]] | None = None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._commands = commands
        self._info = info
        self._metrics = metrics
        self._limits = limits
        self._keep = keep
        self._request = Transcribe()
        self._audio = bytearray()
        self._converter = _converter()
        self._refused = False  # this command's audio was too long: ignore it until audio-stop
        self._stream_started = False  # transcript-start sent for this command

    async def run(self) -> None:
        """Read and answer events until the client goes away. Never raises for anything a
        client does: a vanished client simply ends the session and its audio is dropped."""
        bounded = cast(asyncio.StreamReader, _BoundedReader(self._reader))
        try:
            while (event := await async_read_event(bounded)) is not None:
                await self._handle(event)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            log.debug("wyoming.client_gone", error=str(exc) or type(exc).__name__)
        except Exception as exc:
            # A malformed event (or a bug answering it) ends this session, never the daemon:
            # the one broad handler here, as the dispatcher's per-job wrapper.
            log.exception("wyoming.session_failed", error=repr(exc))
            await self._send(Error(text=f"stenod could not handle the last event: {exc!r}", code="bad_event").event())
        finally:
            self._audio = bytearray()
            self._writer.close()

    def close(self) -> None:
        """End the session at the next read (shutdown); a command being transcribed is answered first."""
        self._reader.feed_eof()

    async def _handle(self, event: Event) -> None:
        if AudioChunk.is_type(event.type):
            self._add(AudioChunk.from_event(event))
        elif AudioStart.is_type(event.type):
            self._start_audio()
        elif AudioStop.is_type(event.type):
            refused, self._refused = self._refused, False
            pcm, self._audio = bytes(self._audio), bytearray()
            if refused:
                seconds = self._limits.max_command_seconds
                self._metrics.failed(self._label(self._request.name), "too_long")
                text = f"the command was longer than {seconds:g} s and was not transcribed (max_command_seconds)"
                await self._send(Error(text=text, code="too_long").event())
            else:
                await self._answer(pcm)
        elif Transcribe.is_type(event.type):
            self._request = Transcribe.from_event(event)
            self._start_audio()
        elif Describe.is_type(event.type):
            await self._send(self._info().event())

    def _start_audio(self) -> None:
        self._audio = bytearray()
        self._converter = _converter()
        self._refused = False

    def _add(self, chunk: AudioChunk) -> None:
        if self._refused:
            return
        self._audio += self._converter.convert(chunk).audio
        if len(self._audio) > self._limits.max_command_seconds * _BYTES_PER_SECOND:
            self._refused = True
            self._audio = bytearray()

    async def _answer(self, pcm: bytes) -> None:
        stopped = time.perf_counter()
        name = self._request.name or None
        label = self._label(name)
        streaming = self._limits.streaming
        chunks: asyncio.Queue[Segment | None] = asyncio.Queue()
        self._stream_started = False
        outcome: provider.Transcript | JobError
        async with asyncio.TaskGroup() as pump:
            if streaming:
                pump.create_task(self._stream(chunks), name="wyoming:transcript-chunks")
            try:
                found = await self._commands.transcribe(
                    pcm,
                    name=name,
                    language=self._request.language,
                    on_segment=chunks.put_nowait if streaming else None,
                )
                outcome = found
            except JobError as exc:  # caught here: a TaskGroup would wrap it in a group
                outcome = exc
            finally:
                chunks.put_nowait(None)
        if isinstance(outcome, JobError):
            self._metrics.failed(label, outcome.code)
            log.warning("wyoming.command_failed", provider=name, code=outcome.code, error=outcome.message)
            await self._send(Error(text=outcome.message, code=outcome.code).event())
            return
        if streaming:
            if not self._stream_started:  # silence: no piece was decoded
                await self._send(TranscriptStart(language=self._request.language).event())
            await self._send(TranscriptStop().event())
        await self._send(Transcript(text=outcome.text, language=outcome.language).event())
        seconds, audio_seconds = time.perf_counter() - stopped, len(pcm) / _BYTES_PER_SECOND
        self._metrics.answered(label, seconds, audio_seconds)
        log.info(
            "wyoming.command_answered",
            provider=label,
            audio_seconds=round(audio_seconds, 2),
            latency_seconds=round(seconds, 3),
        )
        if self._keep is not None:  # after the answer: the person waits for it, not for the journal
            await self._keep(HeardCommand(label, outcome, self._client(), audio_seconds))

    def _client(self) -> str:
        peer = self._writer.get_extra_info("peername")
        return str(peer[0]) if isinstance(peer, tuple) else "a Wyoming client"

    async def _stream(self, chunks: asyncio.Queue[Segment | None]) -> None:
        """``transcript-start`` with the first decoded piece (so that an error before any is
        sent alone), then a ``transcript-chunk`` per piece."""
        while (segment := await chunks.get()) is not None:
            if not self._stream_started:
                await self._send(TranscriptStart(language=self._request.language).event())
                self._stream_started = True
            await self._send(TranscriptChunk(text=segment.text).event())

    async def _send(self, event: Event) -> None:
        if self._writer.is_closing():
            return
        try:
            await async_write_event(event, self._writer)
        except ConnectionError:
            self._reader.feed_eof()  # the client went away: the session ends at its next read

    def _label(self, name: str | None) -> str:
        """A bounded metrics label: a served provider's name, else ``other``."""
        served = [model.name for model in self._commands.models()]
        if not name:
            return served[0] if served else "other"
        return name if name in served else "other"


class _BoundedReader:
    """The two reads ``async_read_event`` makes, refusing a body longer than
    ``_MAX_EVENT_BYTES`` (ValueError, which it takes as the end of the stream)."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    async def readline(self) -> bytes:
        return await self._reader.readline()

    async def readexactly(self, n: int) -> bytes:
        if n > _MAX_EVENT_BYTES:
            log.warning("wyoming.event_too_large", bytes=n)
            raise ValueError(f"an event of {n} bytes")
        return await self._reader.readexactly(n)


def _converter() -> AudioChunkConverter:
    """A converter for one command: ``ratecv`` keeps state from chunk to chunk."""
    return AudioChunkConverter(rate=LiveAudio.SAMPLE_RATE, width=LiveAudio.SAMPLE_WIDTH, channels=1)
