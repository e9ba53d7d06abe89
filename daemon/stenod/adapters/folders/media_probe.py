"""What a file's container says, without decoding: its audio's duration (limits are checked
before any upload) and its format (an upload sent without a file name extension)."""

from __future__ import annotations

from pathlib import Path

import av


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
