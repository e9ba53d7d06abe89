"""What a file's container says, without decoding: its audio's duration (limits are checked
before any upload) and its format (an upload sent without a file name extension).

libav parses these untrusted files in a child process (:class:`MediaProbe`, on the core's
:class:`~stenod.provider.media_child.MediaChild`), as it decodes them in the whisper workers, never in
the daemon: a crash, a hang or a file that makes it allocate without end costs that child,
and the answer is "unknown".
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import av
import structlog

from stenod.provider.media_child import MediaChild, MediaChildFailed

__all__ = ["MediaProbe", "probe_audio_format", "probe_duration"]

log = structlog.get_logger("stenod.media_probe")

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


class MediaProbe:
    """:func:`probe_duration` and :func:`probe_audio_format` run in a :class:`MediaChild`.
    Blocking: call from a worker thread."""

    def __init__(self, *, timeout_seconds: float = 15.0) -> None:
        self._child = MediaChild(timeout_seconds=timeout_seconds)

    def duration(self, path: Path) -> float | None:
        """Seconds of audio in ``path``, or None when the container does not say or libav failed."""
        return self._run(probe_duration, path, None)

    def audio_format(self, path: Path) -> str | None:
        """The extension for ``path``'s audio container, or None (not audio, or libav failed)."""
        return self._run(probe_audio_format, path, None)

    def _run(self, probe: Callable[[Path], _T], path: Path, failed: _T) -> _T:
        try:
            return self._child.call(probe, path, label=path.name)
        except MediaChildFailed as exc:
            log.warning("media.probe_failed", file=str(path), error=str(exc))
            return failed

    def close(self) -> None:
        """Stop the child (the daemon is stopping)."""
        self._child.close()
