"""Diarization error rate: missed speech + false alarm + speaker confusion over the
reference's speech time, on 10 ms frames, with a forgiveness collar around every
reference boundary (0.25 s either side, as NIST's md-eval and pyannote.metrics use it)
and the best one-to-one mapping of hypothesis labels onto reference speakers (Hungarian).
Overlapped speech counts once per voice, as in md-eval.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["Score", "der", "read_rttm"]

_STEP = 0.01


@dataclass(frozen=True, slots=True)
class Score:
    """Seconds of scored reference speech and of each error kind."""

    speech: float
    missed: float
    false_alarm: float
    confusion: float

    @property
    def der(self) -> float:
        return (self.missed + self.false_alarm + self.confusion) / self.speech if self.speech else 0.0


def _grid(turns: Iterable[tuple[str, float, float]], frames: int) -> tuple[list[str], np.ndarray]:
    turns = list(turns)
    labels = sorted({t[0] for t in turns})
    grid = np.zeros((len(labels), frames), dtype=bool)
    for label, start, end in turns:
        grid[labels.index(label), round(start / _STEP) : round(end / _STEP)] = True
    return labels, grid


def der(
    reference: Iterable[tuple[str, float, float]], hypothesis: Iterable[tuple[str, float, float]], collar: float = 0.25
) -> Score:
    """Score ``hypothesis`` turns (label, start, end) against ``reference`` turns."""
    reference, hypothesis = list(reference), list(hypothesis)
    end = max([t[2] for t in reference + hypothesis] or [0.0])
    frames = int(end / _STEP) + 2
    _, ref = _grid(reference, frames)
    _, hyp = _grid(hypothesis, frames)
    scored = np.ones(frames, dtype=bool)
    pad = round(collar / _STEP)
    for _, start, stop in reference:
        for edge in (start, stop):
            at = round(edge / _STEP)
            scored[max(0, at - pad) : at + pad] = False
    ref, hyp = ref[:, scored], hyp[:, scored]
    n_ref, n_hyp = ref.sum(axis=0), hyp.sum(axis=0)
    correct = 0
    if len(ref) and len(hyp):
        together = ref.astype(np.int64) @ hyp.T.astype(np.int64)  # frames each pair speaks at once
        rows, cols = linear_sum_assignment(-together)
        correct = int(together[rows, cols].sum())
    return Score(
        speech=float(n_ref.sum()) * _STEP,
        missed=float(np.maximum(0, n_ref - n_hyp).sum()) * _STEP,
        false_alarm=float(np.maximum(0, n_hyp - n_ref).sum()) * _STEP,
        confusion=float(np.minimum(n_ref, n_hyp).sum() - correct) * _STEP,
    )


def read_rttm(path: Path) -> list[tuple[str, float, float]]:
    """The turns (speaker, start, end) of an RTTM file's ``SPEAKER`` lines (NIST's format:
    the onset in field 4, the duration in field 5, the speaker in field 8)."""
    turns = []
    for line in path.read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == "SPEAKER":
            start = float(fields[3])
            turns.append((fields[7], start, round(start + float(fields[4]), 3)))
    return turns
