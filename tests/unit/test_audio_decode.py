"""The whisper plugin's audio decoding: any common format to 16 kHz mono float samples,
with clear errors for files that are not (or no longer) audio. In process, no workers."""

from __future__ import annotations

import random
from pathlib import Path

import av
import pytest

from stenod.provider import PermanentError
from stenod_whisper.audio import SAMPLE_RATE, PcmStream
from stenod_whisper.windows import windows
from support.speech import FORMATS, SENTENCES, long_speech, synthesise


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same sentence in every format (module-scoped: synthesis is the slow part)."""
    folder = tmp_path_factory.mktemp("decode")
    return {fmt: synthesise(SENTENCES[1], folder / f"speech.{fmt}") for fmt in FORMATS}


def decode(path: Path) -> tuple[list[bytes], PcmStream]:
    with path.open("rb") as f, PcmStream(f, str(path)) as audio:
        return list(audio.chunks()), audio


def seconds(chunks: list[bytes]) -> float:
    return sum(len(c) for c in chunks) / 4 / SAMPLE_RATE


def open_error(path: Path) -> PermanentError:
    with pytest.raises(PermanentError) as info:
        decode(path)
    return info.value


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_decodes_to_as_much_audio_as_the_wav(fmt: str, speech: dict[str, Path]) -> None:
    reference = seconds(decode(speech["wav"])[0])
    # Lossy codecs pad a few milliseconds at the edges (encoder delay, last frame).
    assert seconds(decode(speech[fmt])[0]) == pytest.approx(reference, abs=0.1)


def test_pcm_is_whole_float_samples(speech: dict[str, Path]) -> None:
    chunks, _ = decode(speech["opus"])
    assert all(len(c) % 4 == 0 for c in chunks)


def test_a_short_file_is_one_float_window_in_range(speech: dict[str, Path]) -> None:
    reports: list[float] = []
    with speech["mp3"].open("rb") as f, PcmStream(f, "speech.mp3") as audio:
        [window] = windows(audio, max_seconds=3600, on_progress=reports.append, report_seconds=0.5)
        problems = audio.problems
    samples = window.samples
    assert samples.dtype.name == "float32" and window.seconds == pytest.approx(
        seconds(decode(speech["wav"])[0]), abs=0.1
    )
    assert float(abs(samples).max()) <= 1.0 and float(abs(samples).max()) > 0 and problems == []
    assert reports == sorted(reports) and len(reports) >= 2


def test_a_22050_hz_file_keeps_its_length_at_16_khz(tmp_path: Path, speech: dict[str, Path]) -> None:
    fast = synthesise(SENTENCES[1], tmp_path / "speech.flac", rate=22050)
    assert seconds(decode(fast)[0]) == pytest.approx(seconds(decode(speech["flac"])[0]), abs=0.01)


def test_decoding_is_streamed_in_small_chunks(tmp_path: Path) -> None:
    path, _ = long_speech(tmp_path / "long.mp3", 60)
    with path.open("rb") as f, PcmStream(f, str(path)) as audio:
        largest = max(len(c) for c in audio.chunks())
    assert largest < SAMPLE_RATE * 4  # never more than a second at a time


def test_a_zero_byte_file_is_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "nothing.wav"
    path.touch()
    error = open_error(path)
    assert (error.code, str(path) in error.message) == ("empty_file", True)


@pytest.mark.parametrize("seed", range(4))
def test_random_bytes_named_wav_are_not_audio(tmp_path: Path, seed: int) -> None:
    path = tmp_path / "noise.wav"
    path.write_bytes(random.Random(seed).randbytes(30_000))
    error = open_error(path)
    assert error.code == "not_audio"
    assert f"{path} is not a recognisable audio file" in error.message


def test_a_text_file_named_mp3_is_not_audio(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp3"
    path.write_text("shopping list: bread, milk, eggs\n" * 40)
    assert open_error(path).code == "not_audio"


def test_a_file_cut_inside_its_header_is_corrupt_audio(tmp_path: Path, speech: dict[str, Path]) -> None:
    path = tmp_path / "cut.flac"
    path.write_bytes(speech["flac"].read_bytes()[:1000])
    error = open_error(path)
    assert (error.code, str(path) in error.message) == ("corrupt_audio", True)


def test_a_truncated_file_keeps_the_audio_before_the_cut(tmp_path: Path, speech: dict[str, Path]) -> None:
    data = speech["flac"].read_bytes()
    path = tmp_path / "half.flac"
    path.write_bytes(data[: len(data) // 2])
    chunks, audio = decode(path)
    assert 0.3 < seconds(chunks) / audio.declared_seconds < 0.7  # type: ignore[operator]


def test_a_truncated_file_says_what_was_lost(tmp_path: Path, speech: dict[str, Path]) -> None:
    data = speech["flac"].read_bytes()
    path = tmp_path / "half.flac"
    path.write_bytes(data[: len(data) // 2])
    _, audio = decode(path)
    assert any("ends early" in p and str(path) in p for p in audio.problems)


def test_an_intact_file_reports_no_problems(speech: dict[str, Path]) -> None:
    _, audio = decode(speech["m4a"])
    assert audio.problems == []


def test_a_video_without_sound_has_no_audio_stream(tmp_path: Path) -> None:
    path = tmp_path / "silent-film.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for index in range(5):
            frame = av.VideoFrame(32, 32, "yuv420p")
            for plane in frame.planes:
                plane.update(bytes(plane.buffer_size))
            frame.pts = index
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    error = open_error(path)
    assert (error.code, str(path) in error.message) == ("no_audio_stream", True)
