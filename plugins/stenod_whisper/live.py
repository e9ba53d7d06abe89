"""Voice commands on a worker of their own: the whisper side of :class:`stenod.provider.LiveTranscriber`.

A reserved worker, not a priority lane in the batch pool: a batch worker holds a file
for its whole length (minutes) and cannot be preempted, so a command queued first in
line would still wait for a free worker. The live worker is a process loaded once at
start, never unloaded, used by nothing else; the batch workers run at a lower CPU
priority while it exists, so on a machine with fewer cores than processes the command
gets the CPU it needs. The price is one more model in memory (the base model: ~300 MB).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import structlog

from stenod.provider import ErrorInfo, LiveAudio, PermanentError, Segment, Transcript
from stenod_whisper import worker
from stenod_whisper.languages import ENGLISH, language_to_decode
from stenod_whisper.pool import EnginePool

__all__ = ["BATCH_NICENESS", "LiveEngine"]

log = structlog.get_logger("stenod_whisper")

BATCH_NICENESS = 10
"""``nice`` of the batch workers while the live worker exists: CFS then gives a process at
normal priority about nine tenths of a contended core."""

_WARM_UP_SECONDS = 1.0


class LiveEngine:
    """Worker processes (``[wyoming] workers``, one by default) holding the model for voice
    commands only."""

    def __init__(
        self, engine: dict[str, Any], *, workers: int = 1, multilingual: bool, beam_size: int, stall_seconds: float
    ) -> None:
        self._pool = EnginePool(engine=engine, workers=workers, idle_unload_seconds=0, stall_seconds=stall_seconds)
        self._workers = workers
        self._multilingual = multilingual
        self._beam_size = beam_size
        self._ids = itertools.count(1)

    async def start(self) -> None:
        """Start the workers and have each decode a second of silence, so that the first
        real commands do not pay for loading the model and CTranslate2's first allocations."""
        silence = LiveAudio(bytes(int(_WARM_UP_SECONDS * LiveAudio.SAMPLE_RATE) * 2), ENGLISH)
        async with asyncio.TaskGroup() as warming:  # at once: each idle worker takes one
            for n in range(self._workers):
                warming.create_task(self.transcribe(silence), name=f"whisper:live-warm-up-{n}")
        log.info("whisper.live_worker_ready", pids=self._pool.worker_pids())

    def worker_pids(self) -> list[int]:
        """The live workers' process ids (fewer while one is restarting)."""
        return self._pool.worker_pids()

    async def transcribe(self, audio: LiveAudio, on_segment: Callable[[Segment], None] | None = None) -> Transcript:
        """Transcribe one command. Raises PermanentError for a language the model does not
        know, RetryableError when the worker died (the next command starts a new one)."""
        request = self.request(audio)

        def on_message(message: dict[str, Any]) -> None:
            if message["kind"] == "segment" and on_segment is not None:
                piece = message["segment"]
                on_segment(Segment(piece["start"], piece["end"], piece["text"]))

        label = f"a voice command of {audio.duration:.1f} s"
        outcome = await self._pool.run(worker.transcribe_pcm, (audio.pcm, request), "live", label, on_message)
        if "error" in outcome:
            error = ErrorInfo.from_json(outcome["error"])
            raise PermanentError(error.message, code=error.code, hint=error.hint)
        return Transcript.from_json(outcome["transcript"])

    def request(self, audio: LiveAudio) -> dict[str, Any]:
        """What the worker needs for ``audio``; PermanentError for an unknown language."""
        code = language_to_decode(audio.language, multilingual=self._multilingual, model="whisper")
        return {
            "task": "transcribe",
            "language": code,
            "language_tag": audio.language,
            "beam_size": audio.beam_size or self._beam_size,
            "vad_filter": bool(audio.vad_filter),  # off unless asked, as the Home Assistant add-on
            "word_timestamps": False,
            "initial_prompt": None,
            "temperature": None,
            "hotwords": None,
            "detect_only": False,
            "batch_size": 0,
            "batch_min_seconds": 0.0,
        }

    async def aclose(self) -> None:
        """Stop the live worker. Idempotent."""
        await self._pool.aclose()
