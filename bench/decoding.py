"""A whole recording as Whisper's 16 kHz mono float32 samples, decoded by stenod's own decoder.

The whisper provider decodes in windows (a worker holds at most a few minutes of audio); the
benchmarks that feed faster-whisper or a diarizer directly want the whole file at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stenod_whisper.audio import PcmStream


def whole_file(path: Path | str) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Every sample of ``path``; raises PermanentError as :class:`PcmStream` does."""
    with open(path, "rb") as fileobj, PcmStream(fileobj, Path(path).name) as audio:
        return np.frombuffer(b"".join(audio.chunks()), dtype=np.float32)
