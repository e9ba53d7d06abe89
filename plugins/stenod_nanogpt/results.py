"""Turn NanoGPT answers into stenod transcripts, stitching separately transcribed pieces.

A piece result is kept as plain JSON (it lives in checkpoints and handles): text,
language, cost, and timings in seconds relative to the start of that piece.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from stenod.provider import Cost, Json, Segment, Transcript, Word

_SENTENCE_END = (".", "?", "!", "。", "？", "！")
_PAUSE_SECONDS = 1.5


def piece_result(body: Mapping[str, Json]) -> dict[str, Json]:
    """The JSON kept for one piece from a sync 200 body or a ``completed`` status body.

    Raises ValueError when the body does not have the documented shape.
    """
    text = body.get("transcription")
    if not isinstance(text, str):
        raise ValueError("no transcription in the answer")
    raw_metadata = body.get("metadata")
    metadata: Mapping[str, Json] = raw_metadata if isinstance(raw_metadata, Mapping) else {}
    diarization = body.get("diarization")
    segments = diarization.get("segments") if isinstance(diarization, Mapping) else None
    return {
        "text": text.strip(),
        "language": metadata.get("language") if isinstance(metadata.get("language"), str) else None,
        "cost": _number(metadata.get("cost")),
        "currency": metadata.get("currency") if isinstance(metadata.get("currency"), str) else None,
        "words": _words(body.get("words")),
        "segments": _segments(segments),
    }


def stitch(pieces: Sequence[tuple[float, float, Mapping[str, Json]]], *, job_id: str | None) -> Transcript:
    """One transcript from ``(start, end, piece_result)`` in recording order, where
    ``start``/``end`` are the piece's bounds in seconds within the recording.

    Timings are shifted by each piece's offset and clamped into its span, so pieces
    never overlap and the segments stay monotonic and cover the recording.
    """
    texts: list[str] = []
    segments: list[Segment] = []
    words: list[Word] = []
    language: str | None = None
    for offset, end, result in pieces:
        text = str(result.get("text") or "")
        if text:
            texts.append(text)
        language = language or result.get("language")
        piece_words = [_shift_word(w, offset, end) for w in result.get("words") or ()]
        piece_segments = [_shift_segment(s, offset, end) for s in result.get("segments") or ()]
        if not piece_segments and piece_words:
            piece_segments = _segments_from_words(piece_words)
        if not piece_segments and text:
            piece_segments = [Segment(offset, end, text)]
        words.extend(sorted(piece_words, key=lambda w: w.start))
        segments.extend(sorted(piece_segments, key=lambda s: s.start))
    total = pieces[-1][1] if pieces else 0.0
    return Transcript(
        text=" ".join(texts),
        language=language,
        duration=round(total, 3),
        segments=tuple(segments),
        words=tuple(words) if words else None,
        provider="nanogpt",
        provider_job_id=job_id,
    )


def total_cost(results: Sequence[Mapping[str, Json]], fallback: Sequence[Mapping[str, Json]] = ()) -> Cost | None:
    """The summed cost of a recording's pieces; ``fallback`` are the 202 run contexts,
    used for pieces whose completed answer carries no cost."""
    amount, currency, seen = 0.0, None, False
    for index, result in enumerate(results):
        cost = _number(result.get("cost"))
        unit = result.get("currency")
        if cost is None and index < len(fallback):
            cost = _number(fallback[index].get("cost"))
            unit = fallback[index].get("paymentSource")
        if cost is not None:
            amount, seen = amount + cost, True
            currency = currency or (unit if isinstance(unit, str) else None)
    return Cost(round(amount, 6), currency or "USD") if seen else None


def _words(raw: Any) -> list[list[Json]]:
    """Words as ``[start, end, text, speaker]``; punctuation joins the word before it,
    spacing tokens are dropped, audio-event tags are kept as words."""
    words: list[list[Json]] = []
    for token in raw if isinstance(raw, list) else ():
        if not isinstance(token, Mapping) or not isinstance(token.get("text"), str):
            continue
        kind, text = token.get("type", "word"), token["text"]
        if kind == "spacing" or not text.strip():
            continue
        if kind == "punctuation" and words:
            words[-1][2] = f"{words[-1][2]}{text.strip()}"
            continue
        start, end = _number(token.get("start")), _number(token.get("end"))
        if start is None or end is None:
            continue
        speaker = token.get("speaker_id")
        words.append([start, max(start, end), text.strip(), speaker if isinstance(speaker, str) else None])
    return words


def _segments(raw: Any) -> list[list[Json]]:
    segments: list[list[Json]] = []
    for item in raw if isinstance(raw, list) else ():
        if not isinstance(item, Mapping) or not isinstance(item.get("text"), str):
            continue
        start, end = _number(item.get("start")), _number(item.get("end"))
        if start is None or end is None:
            continue
        speaker = item.get("speaker")
        segments.append([start, max(start, end), item["text"].strip(), speaker if isinstance(speaker, str) else None])
    return segments


def _shift_word(word: Sequence[Json], offset: float, end: float) -> Word:
    start, stop = _clamp(word[0], offset, end), _clamp(word[1], offset, end)
    return Word(start, stop, str(word[2]), word[3])


def _shift_segment(segment: Sequence[Json], offset: float, end: float) -> Segment:
    start, stop = _clamp(segment[0], offset, end), _clamp(segment[1], offset, end)
    return Segment(start, stop, str(segment[2]), segment[3])


def _segments_from_words(words: Sequence[Word]) -> list[Segment]:
    """Group words into segments at speaker changes, long pauses and sentence ends."""
    segments: list[Segment] = []
    group: list[Word] = []
    for word in words:
        if group and (
            word.speaker != group[-1].speaker
            or word.start - group[-1].end > _PAUSE_SECONDS
            or group[-1].text.endswith(_SENTENCE_END)
        ):
            segments.append(_segment_of(group))
            group = []
        group.append(word)
    if group:
        segments.append(_segment_of(group))
    return segments


def _segment_of(group: Sequence[Word]) -> Segment:
    return Segment(group[0].start, group[-1].end, " ".join(w.text for w in group), group[0].speaker)


def _clamp(value: Json, low: float, high: float) -> float:
    return round(min(max(low + float(value), low), high), 3)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)
