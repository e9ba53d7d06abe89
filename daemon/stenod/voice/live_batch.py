"""A batch-job provider answering a voice command: ``submit → poll → fetch`` in memory.

For a cloud provider without :class:`~stenod.voice.live.LiveTranscriber`. The command is
written to a private WAV file (a provider uploads files), run as a one-item provider job
that the journal never sees (nothing to resume: a command nobody waits for any more is
worthless), polled at the provider's own pace, and the file is deleted. Slower than the
offline engine by the provider's round trips, but behind the same Home Assistant entity.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import wave
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ulid import ULID

from stenod.errors import PermanentError, RetryableError
from stenod.provider import Batch, BatchItem, Json, Limits, Provider, RemoteState, Segment, Task, Transcript
from stenod.voice.live import LiveAudio

__all__ = ["BatchAsLive", "MemoryStepContext"]


class MemoryStepContext:
    """A :class:`~stenod.provider.StepContext` that keeps checkpoints in memory only."""

    def __init__(self) -> None:
        self._saved: Mapping[str, Json] | None = None

    @property
    def saved(self) -> Mapping[str, Json] | None:
        return self._saved

    async def checkpoint(self, data: Mapping[str, Json]) -> None:
        self._saved = dict(data)

    def progress(self, fraction: float) -> None:
        pass

    def segment(self, item_id: str, segment: Segment) -> None:
        pass


class BatchAsLive:
    """One provider's batch API, as a :class:`~stenod.voice.live.LiveTranscriber`."""

    def __init__(self, name: str, provider: Provider, *, poll_seconds: float, folder: Path, timeout_seconds: float):
        self._name = name
        self._provider = provider
        self._poll_seconds = poll_seconds
        self._folder = folder
        self._timeout = timeout_seconds
        self.limits: Limits = provider.limits

    async def start_live(self, workers: int = 1) -> None:
        """Nothing to load: the provider is remote (and answers commands at once anyway)."""

    async def transcribe_live(
        self, audio: LiveAudio, on_segment: Callable[[Segment], None] | None = None
    ) -> Transcript:
        """Run the command as a one-item provider job. Raises PermanentError or
        RetryableError as the provider does, RetryableError when it takes too long."""
        key = str(ULID())
        path = self._folder / f"{key}.wav"
        await asyncio.to_thread(_write_wav, path, audio.pcm)  # makes the folder (0700) if needed
        try:
            st = path.stat()
            item = BatchItem("command", path, "command.wav", st.st_size, audio.duration, st.st_dev, st.st_ino)
            batch = Batch(f"wyoming-{key}", Task.TRANSCRIBE, (item,), audio.language, (), self._options())
            try:
                async with asyncio.timeout(self._timeout):
                    return await self._run(batch)
            except TimeoutError as exc:
                raise RetryableError(f"{self._name} did not answer within {self._timeout:g} s") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def _options(self) -> Any:
        try:
            return self._provider.Options()
        except ValidationError as exc:
            raise PermanentError(f"{self._name} needs options a voice command cannot give: {exc}") from exc

    async def _run(self, batch: Batch) -> Transcript:
        provider = self._provider
        handle = await provider.submit(batch, MemoryStepContext())
        # Polling at the provider's pace is the point here; the caller's timeout bounds it.
        while (status := await provider.poll(handle)).state in (RemoteState.PENDING, RemoteState.RUNNING):  # noqa: ASYNC110
            await asyncio.sleep(max(self._poll_seconds, status.retry_after or 0.0))
        if status.state is not RemoteState.DONE:
            why = status.error.message if status.error else str(status.state)
            raise PermanentError(f"{self._name} could not transcribe the command: {why}")
        [result] = await provider.fetch(handle)
        release = getattr(provider, "release", None)
        if release is not None:
            await release(handle)
        if result.error is not None:
            raise PermanentError(result.error.message, code=result.error.code, hint=result.error.hint)
        if result.transcript is None:
            raise PermanentError(f"{self._name} returned no transcript for the command")
        return result.transcript


def _write_wav(path: Path, pcm: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as raw, wave.open(raw, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(LiveAudio.SAMPLE_WIDTH)
        out.setframerate(LiveAudio.SAMPLE_RATE)
        out.writeframes(pcm)
