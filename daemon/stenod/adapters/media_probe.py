"""Audio duration from the container, without decoding (limits are checked before upload)."""

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
