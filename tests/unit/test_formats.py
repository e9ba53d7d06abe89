"""Transcript formats: readable subtitle cues, TSV, and JSON that strict readers accept."""

from __future__ import annotations

import itertools
import json
import math

import pysubs2
import pytest

from stenod.formats import (
    CUE_CHARS,
    CUE_SECONDS,
    LINE_CHARS,
    cues,
    render_json,
    render_srt,
    render_tsv,
    render_vtt,
)
from stenod.provider import Segment, Transcript, Word

LONG = (
    "The library opens at nine in the morning and closes at six in the evening. Students often arrive "
    "early to find a quiet table near the windows, and on weekends the building is busy with families "
    "who come to borrow books."
)


def timed_words(text: str, start: float, seconds_per_word: float = 0.4) -> tuple[Word, ...]:
    return tuple(
        Word(start + i * seconds_per_word, start + (i + 1) * seconds_per_word - 0.05, w)
        for i, w in enumerate(text.split())
    )


def test_a_long_segment_becomes_cues_a_person_can_read() -> None:
    transcript = Transcript(LONG, segments=(Segment(10.0, 40.0, LONG),))
    made = cues(transcript)
    assert len(made) > 1 and all(len(c.text) <= CUE_CHARS for c in made)
    assert " ".join(c.text for c in made) == LONG
    assert made[0].start == 10.0 and made[-1].end == 40.0
    assert all(a.end <= b.start + 1e-9 for a, b in itertools.pairwise(made))


def test_a_cut_prefers_the_end_of_a_sentence() -> None:
    made = cues(Transcript(LONG, segments=(Segment(0.0, 30.0, LONG),)))
    assert made[0].text.endswith("evening.")


def test_with_word_timestamps_cues_take_their_words_times_and_stay_short() -> None:
    words = timed_words(LONG, 5.0)
    transcript = Transcript(LONG, segments=(Segment(5.0, words[-1].end, LONG),), words=words)
    made = cues(transcript)
    starts = {w.start for w in words}
    assert all(c.start in starts and c.end - c.start <= CUE_SECONDS for c in made)
    assert all(len(c.text) <= CUE_CHARS for c in made) and " ".join(c.text for c in made) == LONG


def test_short_segments_are_one_cue_each_and_keep_their_speaker() -> None:
    transcript = Transcript(
        "hello there. hi", segments=(Segment(0, 1.5, "hello there.", speaker="1"), Segment(2, 3, "hi", speaker="2"))
    )
    assert [(c.text, c.speaker) for c in cues(transcript)] == [("hello there.", "1"), ("hi", "2")]


def test_srt_cues_have_at_most_two_balanced_lines() -> None:
    srt = pysubs2.SSAFile.from_string(render_srt(Transcript(LONG, segments=(Segment(0, 30, LONG),))).decode(), "srt")
    for event in srt:
        lines = event.plaintext.split("\n")
        assert len(lines) <= 2 and all(len(line) <= LINE_CHARS + 10 for line in lines)


def test_a_provider_word_with_a_line_break_in_it_cannot_start_a_new_cue() -> None:
    text = f"{LONG} {LONG} {LONG}"
    words = list(timed_words(text, 0.0))
    words[3] = Word(words[3].start, words[3].end, "at\n\n9\n00:00:00,000-->09:00:00,000\n<b>x</b>")
    transcript = Transcript(text, segments=(Segment(0.0, words[-1].end, text),), words=tuple(words))
    srt = render_srt(transcript).decode()
    vtt = render_vtt(transcript).decode()
    assert srt.count("-->") == vtt.count("-->") == len(cues(transcript))
    assert "<" not in srt.replace("-->", "") and "<b>" not in vtt


def test_tsv_has_whispers_columns_in_milliseconds() -> None:
    transcript = Transcript("a b", segments=(Segment(0.5, 1.25, "a\tb"), Segment(2.0, 3.0, " c ")))
    assert render_tsv(transcript).decode() == "start\tend\ttext\n500\t1250\ta b\n2000\t3000\tc\n"


def test_json_turns_non_finite_numbers_into_null() -> None:
    transcript = Transcript("x", duration=float("nan"), segments=(Segment(0.0, float("inf"), "x"),))
    data = json.loads(render_json(transcript, source="in.wav"))
    assert (data["duration"], data["segments"][0]["end"], data["source"]) == (None, None, "in.wav")


def test_json_is_strict_indented_keeps_non_ascii_text_and_nulls_nan_in_provider_extras() -> None:
    extra = {"scores": [math.nan, math.inf, -math.inf, 0.5], "émotion": "joie"}
    transcript = Transcript("Grüße, 世界", "de", 1.0, (Segment(0.0, 1.0, "Grüße", extra=extra),))
    text = render_json(transcript, source="in/ä.wav").decode()
    data = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in the JSON output"))
    assert data["segments"][0]["extra"] == {"scores": [None, None, None, 0.5], "émotion": "joie"}
    assert "Grüße, 世界" in text and text.startswith('{\n  "source": "in/ä.wav"') and text.endswith("}\n")
