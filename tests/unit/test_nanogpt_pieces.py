"""Where the nanogpt provider cuts a long recording, and how pieces are stitched back."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from stenod.provider import Cost, Diarization, PermanentError
from stenod_nanogpt import NanoGptProvider
from stenod_nanogpt.api import describe_error, diarize_for
from stenod_nanogpt.audio import WINDOW_SAMPLES, Analysis, max_piece_samples, plan_pieces
from stenod_nanogpt.results import piece_result, stitch, total_cost


def analysis_with_quiet_windows(windows: int, quiet: set[int]) -> Analysis:
    energies = tuple(1.0 if w in quiet else 1000.0 for w in range(windows))
    return Analysis(windows * WINDOW_SAMPLES, energies)


def test_cut_lands_in_the_quietest_window_before_the_limit() -> None:
    pieces = plan_pieces(analysis_with_quiet_windows(200, {80}), max_samples=100 * WINDOW_SAMPLES)
    assert pieces[1].start == 80 * WINDOW_SAMPLES + WINDOW_SAMPLES // 2


def test_pieces_cover_the_recording_without_gaps_and_within_the_limit() -> None:
    limit = 37 * WINDOW_SAMPLES
    pieces = plan_pieces(analysis_with_quiet_windows(500, {30, 61, 200, 333}), max_samples=limit)
    ends = [p.start + p.length for p in pieces]
    assert (
        pieces[0].start,
        [p.start for p in pieces[1:]] == ends[:-1],
        ends[-1],
        max(p.length for p in pieces) <= limit,
    ) == (0, True, 500 * WINDOW_SAMPLES, True)


def test_short_recording_is_one_piece() -> None:
    assert len(plan_pieces(analysis_with_quiet_windows(10, set()), max_samples=10 * WINDOW_SAMPLES)) == 1


def test_three_megabytes_hold_about_fifteen_minutes_of_compact_audio() -> None:
    assert 14 * 60 < max_piece_samples(3_000_000) / 16_000 < 16 * 60


def test_stitched_words_are_shifted_by_their_piece_offset() -> None:
    first = piece_result({"transcription": "a", "words": [{"text": "a", "start": 1.0, "end": 2.0, "type": "word"}]})
    second = piece_result({"transcription": "b", "words": [{"text": "b", "start": 0.5, "end": 1.0, "type": "word"}]})
    transcript = stitch([(0.0, 10.0, first), (10.0, 20.0, second)], job_id=None)
    assert transcript.words is not None
    assert [(w.start, w.end, w.text) for w in transcript.words] == [(1.0, 2.0, "a"), (10.5, 11.0, "b")]


def test_word_timings_past_the_piece_end_are_clamped_into_it() -> None:
    result = piece_result({"transcription": "a", "words": [{"text": "a", "start": 9.0, "end": 12.0}]})
    transcript = stitch([(5.0, 15.0, result)], job_id=None)
    assert transcript.words is not None
    assert (transcript.words[0].start, transcript.words[0].end) == (14.0, 15.0)


def test_punctuation_joins_the_previous_word_and_spacing_is_dropped() -> None:
    words = [
        {"text": "Hi", "start": 0.0, "end": 0.3, "type": "word"},
        {"text": " ", "start": 0.3, "end": 0.3, "type": "spacing"},
        {"text": "!", "start": 0.3, "end": 0.3, "type": "punctuation"},
        {"text": "(laughter)", "start": 0.5, "end": 1.0, "type": "audio_event"},
    ]
    transcript = stitch([(0.0, 1.0, piece_result({"transcription": "Hi!", "words": words}))], job_id=None)
    assert transcript.words is not None
    assert [w.text for w in transcript.words] == ["Hi!", "(laughter)"]


def test_words_without_diarization_are_grouped_at_sentence_ends() -> None:
    words = [{"text": t, "start": n, "end": n + 0.5, "type": "word"} for n, t in enumerate(["One", "two.", "Three"])]
    transcript = stitch([(0.0, 3.0, piece_result({"transcription": "x", "words": words}))], job_id=None)
    assert [s.text for s in transcript.segments] == ["One two.", "Three"]


def test_costs_of_pieces_are_summed_falling_back_to_the_run_context() -> None:
    results: list[dict[str, Any]] = [{"cost": 0.01, "currency": "USD"}, {"cost": None}]
    runs: list[dict[str, Any]] = [{}, {"cost": 0.02, "paymentSource": "USD"}]
    assert total_cost(results, runs) == Cost(0.03, "USD")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"error": 413, "message": "File too large"}, ("http_413", "File too large")),
        ({"error": "Insufficient balance", "status": 402}, (None, "Insufficient balance")),
        (
            {"error": {"message": "slow down", "code": "rate_limit_exceeded", "type": "rate_limit_error"}},
            ("rate_limit_exceeded", "slow down"),
        ),
    ],
    ids=["int", "string", "object"],
)
def test_every_documented_error_envelope_is_understood(body: dict[str, Any], expected: tuple[str | None, str]) -> None:
    assert describe_error(httpx.Response(400, json=body)) == expected


def test_error_that_is_not_json_keeps_its_text() -> None:
    assert describe_error(httpx.Response(502, text="Bad gateway from nginx")) == (
        None,
        "Bad gateway from nginx",
    )


def test_a_job_asking_who_spoke_asks_elevenlabs_for_speakers_and_refuses_a_model_that_cannot() -> None:
    assert NanoGptProvider.limits.diarization
    assert diarize_for("Elevenlabs-STT", False, Diarization()) is True
    assert diarize_for("Elevenlabs-STT", False, None) is False and diarize_for("Elevenlabs-STT", True, None) is True
    with pytest.raises(PermanentError, match="cannot say who spoke; use options"):
        diarize_for("Whisper-Large-V3", False, Diarization(num_speakers=2))
