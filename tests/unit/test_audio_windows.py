"""Decoding bounded by duration, not by file size (issue #24, item 5): a worker holds one
window of decoded audio at a time, language detection decodes 30 s, and a file longer than
``max_audio_seconds`` fails ``too_long`` whether its header says so or not."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from stenod.provider import PermanentError
from stenod_whisper.audio import SAMPLE_RATE, PcmStream
from stenod_whisper.windows import head, windows
from support.speech import synthesise
from tests.audio_bombs import opus_silence


def test_a_long_file_comes_in_windows_no_longer_than_asked_end_to_end(tmp_path: Path) -> None:
    bomb = opus_silence(tmp_path / "ten_minutes.opus", 600)
    with bomb.open("rb") as f, PcmStream(f, "ten_minutes.opus") as audio:
        parts = [(w.offset, w.seconds) for w in windows(audio, max_seconds=3600, on_progress=print, window_seconds=60)]
    assert all(seconds <= 60.0 for _, seconds in parts) and len(parts) in (10, 11)
    assert all(a[0] + a[1] == pytest.approx(b[0]) for a, b in itertools.pairwise(parts))
    assert parts[-1][0] + parts[-1][1] == pytest.approx(600.0, abs=0.1)


def test_a_window_ends_at_the_quietest_moment_of_its_last_seconds(tmp_path: Path) -> None:
    speech = synthesise("one two three four five six seven eight nine ten " * 3, tmp_path / "speech.wav")
    with speech.open("rb") as f, PcmStream(f, "speech.wav") as audio:
        first, second, *_ = windows(audio, max_seconds=3600, on_progress=print, window_seconds=4.0)
    at_cut = float(np.square(second.samples[: SAMPLE_RATE // 20]).mean())
    assert at_cut < 0.05 * float(np.square(first.samples).mean())  # between two words, not inside one


def test_a_header_announcing_more_than_the_limit_is_too_long_before_any_decoding(tmp_path: Path) -> None:
    bomb = opus_silence(tmp_path / "hours.opus", 4 * 3600)
    with bomb.open("rb") as f, PcmStream(f, "hours.opus") as audio:
        with pytest.raises(PermanentError) as refused:
            next(windows(audio, max_seconds=3600, on_progress=print))
        assert audio.decoded_seconds == 0
    assert refused.value.code == "too_long" and "4.0 h" in str(refused.value)


def test_a_file_without_a_declared_length_is_too_long_once_its_audio_passes_the_limit(tmp_path: Path) -> None:
    bomb = opus_silence(tmp_path / "live.webm", 900, declared=False)
    held: list[float] = []
    with bomb.open("rb") as f, PcmStream(f, "live.webm") as audio:
        assert audio.declared_seconds is None
        with pytest.raises(PermanentError) as refused:
            for window in windows(audio, max_seconds=300, on_progress=print, window_seconds=120):
                held.append(window.seconds)
        assert audio.decoded_seconds < 301
    assert refused.value.code == "too_long" and max(held) <= 120


def test_language_detection_decodes_only_the_first_thirty_seconds(tmp_path: Path) -> None:
    bomb = opus_silence(tmp_path / "hours.opus", 4 * 3600)
    with bomb.open("rb") as f, PcmStream(f, "hours.opus") as audio:
        samples = head(audio)
        assert audio.decoded_seconds < 31
    assert len(samples) == 30 * SAMPLE_RATE
