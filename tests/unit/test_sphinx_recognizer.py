"""PocketSphinx recognition of a PCM stream: utterances split at silences, capped in
length, timed from the start of the file, and independent of earlier files.
In process (one model load for the module), no worker processes."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest

from stenod_sphinx.audio import PcmStream
from stenod_sphinx.recognizer import Piece, Recognizer, clean_word
from tests.speech import SENTENCES, encode_pcm, synthesise_pcm, synthesise_sentences

_RATE = 22050  # synthesise_pcm's rate


@pytest.fixture(scope="module")
def recognizer() -> Recognizer:
    return Recognizer(max_piece_seconds=30)


def pcm_of(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f, PcmStream(f, str(path)) as audio:
        yield from audio.chunks()


def recognise(recognizer: Recognizer, path: Path) -> list[Piece]:
    return list(recognizer.pieces(pcm_of(path)))


@pytest.mark.parametrize(
    ("token", "word"),
    [
        ("hello", "hello"),
        ("the(2)", "the"),
        ("o'clock", "o'clock"),
        ("<s>", None),
        ("</s>", None),
        ("<sil>", None),
        ("[NOISE]", None),
        ("++BREATH++", None),
        ("", None),
    ],
)
def test_decoder_tokens_become_plain_words(token: str, word: str | None) -> None:
    assert clean_word(token) == word


@pytest.fixture(scope="module")
def two_sentences(recognizer: Recognizer, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Piece]]:
    """Two sentences with a 1.5 s pause, and what the recogniser made of them."""
    path = synthesise_sentences(SENTENCES[3:5], tmp_path_factory.mktemp("two") / "two.wav", pause_seconds=1.5)
    return path, recognise(recognizer, path)


def test_sentences_separated_by_silence_are_separate_pieces(two_sentences: tuple[Path, list[Piece]]) -> None:
    assert len(two_sentences[1]) == 2


def test_pieces_follow_each_other_in_time(two_sentences: tuple[Path, list[Piece]]) -> None:
    pieces = two_sentences[1]
    assert all(a.end <= b.start for a, b in pairwise(pieces))


def test_word_times_lie_inside_their_piece_in_order(two_sentences: tuple[Path, list[Piece]]) -> None:
    for piece in two_sentences[1]:
        times = [t for w in piece.words for t in (w.start, w.end)]
        assert times == sorted(times) and piece.start <= times[0] and times[-1] <= piece.end


def test_times_are_offsets_into_the_whole_file(recognizer: Recognizer, tmp_path: Path) -> None:
    silence = bytes(5 * _RATE * 2)
    path = encode_pcm([silence, synthesise_pcm(SENTENCES[1])], tmp_path / "late.wav")
    first = recognise(recognizer, path)[0]
    assert 4.5 <= first.words[0].start <= 5.8


def test_speech_without_pauses_is_cut_at_the_piece_cap(tmp_path: Path) -> None:
    capped = Recognizer(max_piece_seconds=2)
    path = synthesise_sentences(SENTENCES[:1], tmp_path / "one.wav")  # about 6 s, no pause
    pieces = recognise(capped, path)
    assert len(pieces) >= 3 and all(p.end - p.start <= 2.05 for p in pieces)


def test_pieces_cut_at_the_cap_continue_where_the_previous_ended(tmp_path: Path) -> None:
    capped = Recognizer(max_piece_seconds=2)
    path = synthesise_sentences(SENTENCES[:1], tmp_path / "one.wav")
    pieces = recognise(capped, path)
    assert all(b.start == pytest.approx(a.end, abs=0.05) for a, b in pairwise(pieces))


def test_a_transcript_does_not_depend_on_the_files_decoded_before(
    recognizer: Recognizer, two_sentences: tuple[Path, list[Piece]], tmp_path: Path
) -> None:
    path, before = two_sentences
    recognise(recognizer, synthesise_sentences(SENTENCES[1:2], tmp_path / "other.mp3"))
    assert [p.text for p in recognise(recognizer, path)] == [p.text for p in before]


def test_silence_yields_no_pieces_but_keeps_reporting_the_position(recognizer: Recognizer) -> None:
    positions: list[float] = []
    silence = (bytes(16000) for _ in range(50))  # 25 s of digital silence at 16 kHz
    pieces = list(recognizer.pieces(silence, on_audio=positions.append, audio_report_seconds=5))
    assert (pieces, positions[-1]) == ([], 25.0) and len(positions) >= 5
