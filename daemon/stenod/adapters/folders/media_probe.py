"""What a file's container says, without decoding: its audio's duration (limits are checked
before any upload) and its format (an upload sent without a file name extension).

libav parses these untrusted files in a child process (:class:`MediaProbe`), as it decodes
them in the whisper workers, never in the daemon: a crash, a hang or a file that makes it
allocate without end costs that child, and the answer is "unknown".
"""

from __future__ import annotations

import multiprocessing
import resource
import threading
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TypeVar

import av
import pebble
import structlog

__all__ = ["MediaProbe", "probe_audio_format", "probe_duration"]

log = structlog.get_logger("stenod.media_probe")

_MEMORY_BYTES = 1 << 30  # a container's header needs far less; past this libav fails, not the host
_T = TypeVar("_T")


def probe_duration(path: Path) -> float | None:
    """Seconds of audio in ``path``, or None if the container does not say (or is not media)."""
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            stream = next((s for s in container.streams if s.type == "audio"), None)
            if stream is not None and stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            if container.duration is not None:
                return container.duration / 1_000_000
    except (av.FFmpegError, OSError, ValueError):
        return None
    return None


# libav's demuxer names (``container.format.name``) and the extension stenod gives such a file.
_EXTENSIONS = {
    "wav": "wav",
    "mp3": "mp3",
    "flac": "flac",
    "ogg": "ogg",
    "mov,mp4,m4a,3gp,3g2,mj2": "m4a",
    "matroska,webm": "webm",
    "aac": "aac",
    "aiff": "aiff",
    "amr": "amr",
    "asf": "wma",
    "caf": "caf",
    "ac3": "ac3",
}


def probe_audio_format(path: Path) -> str | None:
    """The file extension for ``path``'s container if it holds audio stenod can read, else None."""
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not any(s.type == "audio" for s in container.streams):
                return None
            return _EXTENSIONS.get(container.format.name)
    except (av.FFmpegError, OSError, ValueError):
        return None


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (_MEMORY_BYTES, _MEMORY_BYTES))


class MediaProbe:
    """:func:`probe_duration` and :func:`probe_audio_format` run in one child process,
    started on first use and replaced when it dies. Blocking: call from a worker thread."""

    def __init__(self, *, timeout_seconds: float = 15.0) -> None:
        self._timeout = timeout_seconds
        self._pool: pebble.ProcessPool | None = None
        self._lock = threading.Lock()  # callers are worker threads (intake, uploads)

    def duration(self, path: Path) -> float | None:
        """Seconds of audio in ``path``, or None when the container does not say or libav failed."""
        return self._run(probe_duration, path, None)

    def audio_format(self, path: Path) -> str | None:
        """The extension for ``path``'s audio container, or None (not audio, or libav failed)."""
        return self._run(probe_audio_format, path, None)

    def _run(self, probe: Callable[[Path], _T], path: Path, failed: _T) -> _T:
        with self._lock:
            if self._pool is None:
                self._pool = pebble.ProcessPool(
                    max_workers=1, initializer=_limit_memory, context=multiprocessing.get_context("spawn")
                )
            pool = self._pool
        try:
            return pool.schedule(probe, args=(path,), timeout=self._timeout).result()
        except (pebble.ProcessExpired, FutureTimeout, BrokenProcessPool, RuntimeError, MemoryError) as exc:
            log.warning("media.probe_failed", file=str(path), error=f"{type(exc).__name__}: {exc}")
            if isinstance(exc, BrokenProcessPool | RuntimeError):
                self.close()
            return failed

    def close(self) -> None:
        """Stop the child (the daemon is stopping, or the pool broke)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()  # type: ignore[no-untyped-call]
            pool.join(timeout=5)
