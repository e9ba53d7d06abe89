"""OpenAI's diarization contract through the official ``openai`` SDK, unchanged:
``gpt-4o-transcribe-diarize`` with ``response_format="diarized_json"``, known speakers
from data URLs, ``chunking_strategy``, and streamed ``transcript.text.segment`` events.

``default_provider`` is the echo plugin here, which says who spoke from a script (the
voices in the file's name; known speakers' clips label the voices in order).
"""

from __future__ import annotations

import base64
import wave
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from openai.types.audio import TranscriptionDiarized, TranscriptionTextSegmentEvent

from tests.e2e.http_support import KEY, HttpDaemon, http_daemon

MODEL = "gpt-4o-transcribe-diarize"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpDaemon]:
    tmp = tmp_path_factory.mktemp("openai-speakers")
    with http_daemon(tmp, top={"default_provider": "echo"}) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: HttpDaemon) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=120) as sdk:
        yield sdk


def recording(tmp_path: Path, name: str) -> Path:
    """A short WAV of its own content (the same audio twice would reuse the first result)."""
    path = tmp_path / name
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes(b"\0\0" * 4000 + name.encode().ljust(64, b"\0"))
    return path


def clip(tmp_path: Path, seconds: float) -> str:
    """A data URL of a WAV clip lasting ``seconds``."""
    path = tmp_path / f"clip-{seconds}.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8_000)
        out.writeframes(b"\0\0" * int(8_000 * seconds))
    return "data:audio/wav;base64," + base64.b64encode(path.read_bytes()).decode()


def test_diarized_json_gives_segments_with_speakers_lettered_as_openai_does(
    client: openai.OpenAI, tmp_path: Path
) -> None:
    audio = recording(tmp_path, "voices-amy-ben-amy.wav")
    result = client.audio.transcriptions.create(
        file=audio, model=MODEL, response_format="diarized_json", chunking_strategy="auto"
    )
    assert isinstance(result, TranscriptionDiarized)
    assert [(s.speaker, s.text) for s in result.segments] == [
        ("A", "turn 0 by amy"),
        ("B", "turn 1 by ben"),
        ("A", "turn 2 by amy"),
    ]
    assert result.task == "transcribe" and result.duration == 6.0 and result.usage is not None
    assert all(s.type == "transcript.text.segment" for s in result.segments)


def test_known_speakers_from_data_urls_label_their_voices_by_name(client: openai.OpenAI, tmp_path: Path) -> None:
    audio = recording(tmp_path, "voices-cal-dot-cal.wav")
    result = client.audio.transcriptions.create(
        file=audio,
        model=MODEL,
        response_format="diarized_json",
        chunking_strategy={"type": "server_vad", "threshold": 0.5},
        extra_body={
            "known_speaker_names": ["agent", "customer"],
            "known_speaker_references": [clip(tmp_path, 2.5), clip(tmp_path, 3)],
        },
    )
    assert [s.speaker for s in result.segments] == ["agent", "customer", "agent"]


def test_known_speakers_as_the_sdk_types_them(client: openai.OpenAI, tmp_path: Path) -> None:
    audio = recording(tmp_path, "voices-eli-fox.wav")
    result = client.audio.transcriptions.create(
        file=audio,
        model=MODEL,
        response_format="diarized_json",
        chunking_strategy="auto",
        known_speaker_names=["host"],
        known_speaker_references=[clip(tmp_path, 4)],
    )
    assert [s.speaker for s in result.segments] == ["host", "A"]


def test_streaming_a_diarized_transcription_sends_segment_events_then_the_text(
    client: openai.OpenAI, tmp_path: Path
) -> None:
    audio = recording(tmp_path, "voices-gil-han.wav")
    events = list(
        client.audio.transcriptions.create(
            file=audio, model=MODEL, response_format="diarized_json", chunking_strategy="auto", stream=True
        )
    )
    segments = [e for e in events if isinstance(e, TranscriptionTextSegmentEvent)]
    assert [(e.speaker, e.text) for e in segments] == [("A", "turn 0 by gil"), ("B", "turn 1 by han")]
    assert events[-1].type == "transcript.text.done" and events[-1].text == "turn 0 by gil turn 1 by han"


@pytest.mark.parametrize(
    ("names", "clips", "says"),
    [
        (["a", "b"], [2.5], "give one clip for each name"),
        (["a", "b", "c", "d", "e"], [2.5] * 5, "at most 4 known speakers"),
        (["short"], [1.0], "lasts 1.0 s; a reference lasts 2 to 10 s"),
        (["long"], [12.0], "lasts 12.0 s"),
        (["a", "a"], [2.5, 2.5], "must not repeat"),
    ],
)
def test_a_bad_known_speaker_is_a_400_that_names_it(
    client: openai.OpenAI, tmp_path: Path, names: list[str], clips: list[float], says: str
) -> None:
    audio = recording(tmp_path, "voices-ivo-jan.wav")
    with pytest.raises(openai.BadRequestError) as refused:
        client.audio.transcriptions.create(
            file=audio,
            model=MODEL,
            response_format="diarized_json",
            chunking_strategy="auto",
            known_speaker_names=names,
            known_speaker_references=[clip(tmp_path, s) for s in clips],
        )
    assert says in refused.value.message


def test_a_reference_that_is_not_audio_is_refused(client: openai.OpenAI, tmp_path: Path) -> None:
    audio = recording(tmp_path, "voices-kai-lou.wav")
    not_audio = "data:audio/wav;base64," + base64.b64encode(b"not a wave at all" * 10).decode()
    with pytest.raises(openai.BadRequestError) as refused:
        client.audio.transcriptions.create(
            file=audio,
            model=MODEL,
            response_format="diarized_json",
            chunking_strategy="auto",
            known_speaker_names=["x"],
            known_speaker_references=[not_audio],
        )
    assert "known_speaker_references[0] is not audio" in refused.value.message


def test_a_provider_that_cannot_diarize_is_a_clear_400(tmp_path: Path) -> None:
    """A provider whose optional part is missing (here the echo plugin told so) is refused
    with what to install, before any job."""
    (tmp_path / "clips").mkdir()
    audio = recording(tmp_path / "clips", "voices-max-ned.wav")
    with (
        http_daemon(tmp_path, providers={"echo": {"diarization": False}}) as server,
        openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=120) as sdk,
        pytest.raises(openai.BadRequestError) as refused,
    ):
        sdk.audio.transcriptions.create(
            file=audio, model="echo", response_format="diarized_json", chunking_strategy="auto"
        )
    assert "echo cannot say who spoke" in refused.value.message
    assert "pip install 'stenod-echo[voices]'" in refused.value.message
