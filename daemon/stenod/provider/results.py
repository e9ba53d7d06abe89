"""What a provider gives back for an item: a transcript (segments, words, speakers), translated
documents, or an error, in one shape for every provider. Part of the plugin API: plugins
import these names from :mod:`stenod.provider`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from stenod.errors import ErrorInfo
from stenod.provider.jobs import Json
from stenod.speakers import Speaker, speakers_from_json

__all__ = ["Cost", "ItemResult", "Segment", "Transcript", "TranslatedDocument", "Word"]


@dataclass(frozen=True, slots=True)
class Word:
    start: float
    end: float
    text: str
    speaker: str | None = None
    confidence: float | None = None


@dataclass(frozen=True, slots=True)
class Segment:
    """A timed piece of a transcript. ``extra`` keeps provider-specific fields
    (sentiment, emotion, detected language, …) in the normalised JSON."""

    start: float
    end: float
    text: str
    speaker: str | None = None
    confidence: float | None = None
    extra: Mapping[str, Json] = field(default_factory=dict)


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


@dataclass(frozen=True, slots=True)
class Transcript:
    """The normalised transcript of one input, the same for every provider."""

    text: str
    language: str | None = None
    duration: float | None = None
    segments: tuple[Segment, ...] = ()
    words: tuple[Word, ...] | None = None
    provider: str | None = None
    provider_job_id: str | None = None
    language_probability: float | None = None  # set when the provider detected the language
    speakers: tuple[Speaker, ...] = ()  # each voice heard, when the provider said who spoke

    def to_json(self) -> dict[str, Json]:
        """JSON-safe: a non-finite number from a provider (NaN, inf) becomes null, which every
        JSON reader accepts (a bare NaN token is not JSON)."""
        return {
            "text": self.text,
            "language": self.language,
            "language_probability": _finite(self.language_probability),
            "duration": _finite(self.duration),
            "segments": [
                {
                    "start": _finite(s.start),
                    "end": _finite(s.end),
                    "text": s.text,
                    "speaker": s.speaker,
                    "confidence": _finite(s.confidence),
                    **({"extra": dict(s.extra)} if s.extra else {}),
                }
                for s in self.segments
            ],
            "words": None
            if self.words is None
            else [
                {
                    "start": _finite(w.start),
                    "end": _finite(w.end),
                    "text": w.text,
                    "speaker": w.speaker,
                    "confidence": _finite(w.confidence),
                }
                for w in self.words
            ],
            "provider": self.provider,
            "provider_job_id": self.provider_job_id,
            **({"speakers": [s.to_json() for s in self.speakers]} if self.speakers else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Json]) -> Transcript:
        words = data.get("words")
        return cls(
            text=data["text"],
            language=data.get("language"),
            duration=data.get("duration"),
            segments=tuple(
                Segment(
                    start=s["start"] if s["start"] is not None else 0.0,  # null: it was not a number
                    end=s["end"] if s["end"] is not None else (s["start"] or 0.0),
                    text=s["text"],
                    speaker=s.get("speaker"),
                    confidence=s.get("confidence"),
                    extra=s.get("extra") or {},
                )
                for s in data.get("segments") or ()
            ),
            words=None
            if words is None
            else tuple(
                Word(w["start"] or 0.0, w["end"] or w["start"] or 0.0, w["text"], w.get("speaker"), w.get("confidence"))
                for w in words
            ),
            provider=data.get("provider"),
            provider_job_id=data.get("provider_job_id"),
            language_probability=data.get("language_probability"),
            speakers=speakers_from_json(data.get("speakers")),
        )


@dataclass(frozen=True, slots=True)
class TranslatedDocument:
    """A translated document for one target language; written as
    ``<stem>.<language>.<extension>`` beside the input (or in the output dir)."""

    language: str
    content: bytes
    extension: str


@dataclass(frozen=True, slots=True)
class Cost:
    amount: float
    currency: str = "USD"


@dataclass(frozen=True, slots=True)
class ItemResult:
    """The outcome of one item: a transcript, translated documents, or an error."""

    item_id: str
    transcript: Transcript | None = None
    documents: tuple[TranslatedDocument, ...] = ()
    error: ErrorInfo | None = None
    cost: Cost | None = None
