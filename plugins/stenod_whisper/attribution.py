"""Who said each word: speaker turns from diarization laid over a transcript's words and
segments.

A word goes to the speaker whose turns cover most of it (in an overlap, the one with
the larger share; a word in a gap between turns, to the nearest turn). A segment whose
words change speaker is cut where they change; each part keeps the segment's scores but
no tokens (they cannot be split by time), and segments are numbered again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from stenod.provider import Segment, Transcript, Word

__all__ = ["SpeakerTurn", "attribute"]


@dataclass(frozen=True, slots=True)
class SpeakerTurn:
    """A stretch of time (seconds) in which ``speaker`` (a label) speaks."""

    speaker: str
    start: float
    end: float


def speaker_of(start: float, end: float, turns: Sequence[SpeakerTurn]) -> str | None:
    """The speaker covering most of [start, end]; the nearest turn's when none covers it."""
    if not turns:
        return None
    shares: dict[str, float] = {}
    for turn in turns:
        covered = min(end, turn.end) - max(start, turn.start)
        if covered > 0:
            shares[turn.speaker] = shares.get(turn.speaker, 0.0) + covered
    if shares:
        return max(shares, key=lambda speaker: shares[speaker])
    middle = (start + end) / 2
    return min(turns, key=lambda t: max(t.start - middle, middle - t.end)).speaker


def _segment_of(word: Word, segments: Sequence[Segment]) -> int:
    overlaps = [min(word.end, s.end) - max(word.start, s.start) for s in segments]
    best = max(range(len(segments)), key=lambda i: overlaps[i])
    if overlaps[best] > 0:
        return best
    middle = (word.start + word.end) / 2
    return min(range(len(segments)), key=lambda i: abs((segments[i].start + segments[i].end) / 2 - middle))


def _join(words: Sequence[Word], spaced: bool) -> str:
    return (" " if spaced else "").join(w.text for w in words)


def _cut(segment: Segment, words: Sequence[Word]) -> list[Segment]:
    if not words:
        return [segment]
    if all(w.speaker == words[0].speaker for w in words):
        return [replace(segment, speaker=words[0].speaker)]
    spaced = " " in segment.text  # scripts written without spaces (Chinese, Japanese, Thai) join words as they are
    runs: list[list[Word]] = [[words[0]]]
    for word in words[1:]:
        if word.speaker == runs[-1][-1].speaker:
            runs[-1].append(word)
        else:
            runs.append([word])
    extra = {**dict(segment.extra), "tokens": []}
    return [
        replace(
            segment,
            start=run[0].start if i else segment.start,
            end=run[-1].end if i < len(runs) - 1 else segment.end,
            text=_join(run, spaced),
            speaker=run[0].speaker,
            extra=extra,
        )
        for i, run in enumerate(runs)
    ]


def attribute(transcript: Transcript, turns: Sequence[SpeakerTurn]) -> Transcript:
    """``transcript`` with a speaker on every word and segment, segments cut where the
    speaker changes. Needs word times for the cuts; without words, each segment goes to
    the speaker covering most of it."""
    words = [replace(w, speaker=speaker_of(w.start, w.end, turns)) for w in transcript.words or ()]
    segments = list(transcript.segments)
    by_segment: list[list[Word]] = [[] for _ in segments]
    if segments:
        for word in words:
            by_segment[_segment_of(word, segments)].append(word)
    cut: list[Segment] = []
    for segment, own in zip(segments, by_segment, strict=True):
        if own:
            cut.extend(_cut(segment, own))
        else:
            cut.append(replace(segment, speaker=speaker_of(segment.start, segment.end, turns)))
    numbered = tuple(replace(s, extra={**dict(s.extra), "id": i}) if "id" in s.extra else s for i, s in enumerate(cut))
    return replace(transcript, segments=numbered, words=tuple(words) if transcript.words is not None else None)
