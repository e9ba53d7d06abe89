"""faster-whisper's segments as stenod's, and sentence-sized segments from words.

The batched pipeline decodes a whole speech chunk (up to 30 s) as one segment: with
timestamps on it drops whole sentences (faster-whisper's issue #1427), so it runs without
them and asks for word times instead (cross-attention alignment, which loses nothing).
:func:`sentences` cuts such a chunk at the ends of sentences and at pauses, each piece
timed by its words, so subtitles and the ``.json`` get segments as the plain decoder gives
them: a sentence, rarely more than 15 seconds.
"""

from __future__ import annotations

import math
from typing import Any

from stenod.provider import Segment, Word

__all__ = ["segment_json", "segment_of", "sentences", "words_of"]

_SENTENCE_END = (".", "?", "!", "。", "？", "！", "…")
_PAUSE_SECONDS = 1.0  # silence between two words that ends a segment
_LONGEST_SECONDS = 15.0  # a segment this long is cut at its next word (after a comma if one comes soon)
_SHORTEST_SECONDS = 1.0  # a sentence shorter than this joins the next one ("Yes. Of course.")


def segment_of(piece: Any) -> Segment:
    return Segment(
        start=round(piece.start, 3),
        end=round(piece.end, 3),
        text=piece.text.strip(),
        confidence=round(min(1.0, math.exp(piece.avg_logprob)), 4),
        extra={
            "id": piece.id,
            "seek": piece.seek,
            "tokens": list(piece.tokens),
            "temperature": piece.temperature,
            "avg_logprob": round(piece.avg_logprob, 4),
            "compression_ratio": round(piece.compression_ratio, 4),
            "no_speech_prob": round(piece.no_speech_prob, 4),
        },
    )


def words_of(piece: Any) -> list[Word]:
    return [
        Word(round(w.start, 3), round(w.end, 3), w.word.strip(), confidence=round(w.probability, 4))
        for w in piece.words or ()
        if w.word.strip()
    ]


def sentences(piece: Any) -> list[Segment]:
    """The piece cut into sentence-sized segments by its words' times (the piece as one
    segment when it has no words). Each keeps the piece's scores; ``tokens`` stay with the
    piece (they cannot be split by time), so the parts carry none; the caller numbers them."""
    words = [w for w in piece.words or () if w.word.strip()]
    if not words:
        return [segment_of(piece)]
    whole = segment_of(piece)
    extra = {**dict(whole.extra), "tokens": []}
    groups: list[list[Any]] = [[]]
    for index, word in enumerate(words):
        group = groups[-1]
        group.append(word)
        following = words[index + 1] if index + 1 < len(words) else None
        if following is None:
            break
        length = word.end - group[0].start
        text = word.word.strip()
        if (
            (text.endswith(_SENTENCE_END) and length >= _SHORTEST_SECONDS)
            or following.start - word.end >= _PAUSE_SECONDS
            or length >= _LONGEST_SECONDS
            or (length >= _LONGEST_SECONDS * 0.7 and text.endswith((",", ";", ":", "，", "、")))
        ):
            groups.append([])
    return [
        Segment(
            start=round(group[0].start, 3),
            end=round(group[-1].end, 3),
            text="".join(w.word for w in group).strip(),
            confidence=whole.confidence,
            extra=extra,
        )
        for group in groups
    ]


def segment_json(segment: Segment) -> dict[str, Any]:
    return {"start": segment.start, "end": segment.end, "text": segment.text, **dict(segment.extra)}
