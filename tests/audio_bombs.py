"""Decompression bombs for tests: files that weigh little and decode to hours of audio.

One Opus packet of silence (20 ms) is encoded once and muxed again and again with rising
timestamps: four hours are 720,000 packets, ~5 MB, written in about two seconds, and decode
to 921 MB of 16 kHz float samples. ``declared=False`` writes it as a live WebM, whose header
carries no duration, so only decoding can tell how long it is.
"""

from __future__ import annotations

import fractions
from pathlib import Path

import av
import numpy as np

__all__ = ["opus_silence"]

_RATE = 48000
_FRAME = 960  # 20 ms


def opus_silence(path: Path, seconds: float, *, declared: bool = True) -> Path:
    """Write ``seconds`` of Opus silence to ``path`` (Ogg, or live WebM when not ``declared``)."""
    options = {} if declared else {"live": "1"}
    with av.open(str(path), "w", format="ogg" if declared else "webm", options=options) as out:
        stream = out.add_stream("libopus", rate=_RATE)
        stream.layout = "mono"
        stream.bit_rate = 6000
        frame = av.AudioFrame.from_ndarray(np.zeros((1, _FRAME), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate = _RATE
        packets = []
        for index in range(40):  # past the encoder's start-up: a steady packet of silence
            frame.pts = index * _FRAME
            packets += stream.encode(frame)
        silence = bytes(packets[-1])
        for index in range(int(seconds * _RATE / _FRAME)):
            packet = av.Packet(silence)
            packet.stream = stream
            packet.pts = packet.dts = index * _FRAME
            packet.time_base = fractions.Fraction(1, _RATE)
            packet.duration = _FRAME
            out.mux(packet)
    return path
