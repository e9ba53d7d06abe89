"""Speaker turns laid over words and segments (stenod_whisper.attribution): pure, no models."""

from __future__ import annotations

from stenod.provider import Segment, Transcript, Word
from stenod_whisper.attribution import SpeakerTurn, attribute, speaker_of

TURNS = (SpeakerTurn("A", 0.0, 2.0), SpeakerTurn("B", 1.8, 4.0), SpeakerTurn("A", 5.0, 6.0))


def transcript(*segments: Segment, words: tuple[Word, ...] | None) -> Transcript:
    return Transcript(text=" ".join(s.text for s in segments), segments=segments, words=words, provider="whisper")


def test_a_word_goes_to_the_speaker_covering_most_of_it() -> None:
    assert speaker_of(1.0, 1.5, TURNS) == "A"
    assert speaker_of(3.0, 3.5, TURNS) == "B"


def test_a_word_in_an_overlap_goes_to_the_larger_share() -> None:
    assert speaker_of(1.85, 2.3, TURNS) == "B"  # A covers 0.15 s of it, B all 0.45 s
    assert speaker_of(1.5, 1.95, TURNS) == "A"


def test_a_word_between_turns_goes_to_the_nearest() -> None:
    assert speaker_of(4.1, 4.3, TURNS) == "B"
    assert speaker_of(4.7, 4.9, TURNS) == "A"


def test_no_turns_no_speaker() -> None:
    assert speaker_of(0.0, 1.0, ()) is None


def test_a_segment_is_cut_where_the_speaker_changes() -> None:
    words = (Word(0.1, 0.5, "hello"), Word(0.6, 1.0, "there"), Word(2.5, 3.0, "hi"), Word(3.1, 3.5, "back"))
    said = attribute(
        transcript(Segment(0.0, 3.6, "hello there hi back", extra={"id": 0, "tokens": [1]}), words=words), TURNS
    )
    assert [(s.speaker, s.text, s.start, s.end) for s in said.segments] == [
        ("A", "hello there", 0.0, 1.0),
        ("B", "hi back", 2.5, 3.6),
    ]
    assert [s.extra["id"] for s in said.segments] == [0, 1] and said.segments[0].extra["tokens"] == []
    assert [w.speaker for w in said.words or ()] == ["A", "A", "B", "B"]


def test_a_segment_of_one_speaker_is_kept_whole_with_its_tokens() -> None:
    words = (Word(0.1, 0.5, "hello"), Word(0.6, 1.0, "there"))
    said = attribute(
        transcript(Segment(0.0, 1.2, "hello there", extra={"id": 0, "tokens": [7, 8]}), words=words), TURNS
    )
    assert said.segments == (Segment(0.0, 1.2, "hello there", speaker="A", extra={"id": 0, "tokens": [7, 8]}),)


def test_words_of_a_script_without_spaces_are_joined_as_they_are() -> None:
    words = (Word(0.1, 0.5, "你好"), Word(2.5, 3.0, "再见"))
    said = attribute(transcript(Segment(0.0, 3.2, "你好再见"), words=words), TURNS)
    assert [s.text for s in said.segments] == ["你好", "再见"]


def test_without_words_a_segment_goes_to_the_speaker_covering_most_of_it() -> None:
    said = attribute(transcript(Segment(2.2, 3.9, "hi back"), words=None), TURNS)
    assert said.segments[0].speaker == "B" and said.words is None
