"""A batched chunk cut into sentences by its words' times (faster-whisper's segment and
word objects, built with their real fields)."""

from __future__ import annotations

from faster_whisper.transcribe import Segment as FwSegment
from faster_whisper.transcribe import Word as FwWord

from stenod_whisper.segments import sentences


def chunk(*words: tuple[float, float, str], start: float = 0.0, end: float = 30.0) -> FwSegment:
    return FwSegment(
        id=7,
        seek=0,
        start=start,
        end=end,
        text="".join(w for _, _, w in words),
        tokens=[1, 2, 3],
        avg_logprob=-0.2,
        compression_ratio=1.4,
        no_speech_prob=0.01,
        words=[FwWord(start=s, end=e, word=w, probability=0.9) for s, e, w in words] or None,
        temperature=0.0,
    )


def test_a_chunk_without_words_stays_whole():
    (only,) = sentences(chunk())
    assert (only.start, only.end, only.extra["tokens"]) == (0.0, 30.0, [1, 2, 3])


def test_sentences_end_at_their_punctuation_and_are_timed_by_their_words():
    parts = sentences(
        chunk(
            (0.5, 0.9, " Good"),
            (0.9, 1.6, " evening."),
            (1.8, 2.2, " Tonight"),
            (2.2, 2.6, " we"),
            (2.6, 3.4, " talk."),
        )
    )
    assert [(p.start, p.end, p.text) for p in parts] == [(0.5, 1.6, "Good evening."), (1.8, 3.4, "Tonight we talk.")]
    assert all(p.extra["tokens"] == [] and p.extra["avg_logprob"] == -0.2 for p in parts)


def test_a_pause_ends_a_segment_and_a_very_short_sentence_joins_the_next():
    parts = sentences(chunk((0.0, 0.4, " Yes."), (0.5, 0.9, " Of"), (0.9, 1.5, " course"), (3.0, 3.5, " Then")))
    assert [p.text for p in parts] == ["Yes. Of course", "Then"]


def test_a_long_run_without_punctuation_is_cut_at_fifteen_seconds():
    words = [(n * 0.5, n * 0.5 + 0.45, f" w{n}") for n in range(60)]  # 30 s, never a full stop
    parts = sentences(chunk(*words))
    assert len(parts) == 2 and all(p.end - p.start <= 15.5 for p in parts)
    assert " ".join(p.text for p in parts) == " ".join(w.strip() for _, _, w in words)
