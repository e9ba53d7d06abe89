"""Who spoke: what a job asks a provider to find out (:class:`Diarization`), and what a
transcript says of each voice it heard (:class:`Speaker`). Plugins reach these names
through :mod:`stenod.provider`.

A voiceprint is a speaker embedding, never audio: a vector from the provider's own
embedding model, comparable only with vectors of that same model (``Voiceprint.model``).
stenod keeps the voiceprints of speakers a user named, so that a later recording can
label the same voice with the same name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Diarization", "KnownSpeaker", "Speaker", "Voiceprint"]


@dataclass(frozen=True, slots=True)
class Voiceprint:
    """A speaker embedding made by ``model`` (L2-normalised)."""

    model: str
    vector: tuple[float, ...]

    def similarity(self, other: Voiceprint) -> float | None:
        """Cosine similarity, or None when the two come from different models."""
        if other.model != self.model or len(other.vector) != len(self.vector):
            return None
        dot = sum(a * b for a, b in zip(self.vector, other.vector, strict=True))
        norms = math.sqrt(sum(a * a for a in self.vector)) * math.sqrt(sum(b * b for b in other.vector))
        return dot / norms if norms else None

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "vector": list(self.vector)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Voiceprint:
        return cls(str(data["model"]), tuple(float(v) for v in data["vector"]))


@dataclass(frozen=True, slots=True)
class KnownSpeaker:
    """A voice to label with ``name`` when it speaks: from reference clips of it (OpenAI's
    ``known_speaker_references``, 2–10 s each, kept by the daemon as files for the job)
    and from voiceprints stenod remembered when a user named the voice before."""

    name: str
    references: tuple[str, ...] = ()
    voiceprints: tuple[Voiceprint, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "references": list(self.references),
            "voiceprints": [v.to_json() for v in self.voiceprints],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> KnownSpeaker:
        return cls(
            str(data["name"]),
            tuple(str(r) for r in data.get("references") or ()),
            tuple(Voiceprint.from_json(v) for v in data.get("voiceprints") or ()),
        )


@dataclass(frozen=True, slots=True)
class Diarization:
    """Who spoke, asked for with a job: the number of speakers when known (exactly, or at
    least / at most), and voices to label by name."""

    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None
    known: tuple[KnownSpeaker, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "num_speakers": self.num_speakers,
            "min_speakers": self.min_speakers,
            "max_speakers": self.max_speakers,
            "known": [k.to_json() for k in self.known],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Diarization:
        return cls(
            data.get("num_speakers"),
            data.get("min_speakers"),
            data.get("max_speakers"),
            tuple(KnownSpeaker.from_json(k) for k in data.get("known") or ()),
        )


@dataclass(frozen=True, slots=True)
class Speaker:
    """One voice in a transcript. ``label`` is what its segments and words carry (the
    provider's ``SPEAKER_00``, or a known speaker's name); ``name`` is set when the voice
    matched a known or remembered speaker, with the cosine ``similarity`` of the match;
    ``voiceprint`` lets stenod remember the voice when a user names it."""

    label: str
    name: str | None = None
    similarity: float | None = None
    voiceprint: Voiceprint | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "name": self.name,
            "similarity": self.similarity,
            "voiceprint": self.voiceprint.to_json() if self.voiceprint is not None else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Speaker:
        print_ = data.get("voiceprint")
        return cls(
            str(data["label"]),
            data.get("name"),
            data.get("similarity"),
            Voiceprint.from_json(print_) if print_ else None,
        )


def speakers_from_json(data: Sequence[Mapping[str, Any]] | None) -> tuple[Speaker, ...]:
    return tuple(Speaker.from_json(s) for s in data or ())
