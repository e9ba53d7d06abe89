"""OpenAI's audio API, driven by the official ``openai`` SDK against a real daemon.

Every call here is what an OpenAI client sends unchanged, only ``base_url`` pointing at
stenod; the answers are parsed by the SDK's own types.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import jiwer
import openai
import pytest
from openai.types.audio import TranscriptionTextDoneEvent, TranscriptionVerbose

from support.speech import ITALIAN, SENTENCES, festival_speech, long_speech, synthesise_sentences
from tests.e2e.http_support import KEY, HttpDaemon, http_daemon

SPOKEN = SENTENCES[:2]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpDaemon]:
    with http_daemon(tmp_path_factory.mktemp("openai")) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: HttpDaemon) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=300) as sdk:
        yield sdk


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthesise_sentences(SPOKEN, tmp_path_factory.mktemp("speech") / "memo.mp3")


@pytest.fixture(scope="module")
def italian(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return festival_speech(ITALIAN, tmp_path_factory.mktemp("italian") / "saluti.wav", voice="italian")


def wer(reference: str, hypothesis: str) -> float:
    def clean(text: str) -> str:
        return " ".join("".join(c if c.isalnum() or c.isspace() else " " for c in text.lower()).split())

    return float(jiwer.wer(clean(reference), clean(hypothesis)))


def test_json_is_the_text_of_the_speech(client: openai.OpenAI, speech: Path) -> None:
    result = client.audio.transcriptions.create(file=speech, model="whisper-1")
    assert wer(" ".join(SPOKEN), result.text) < 0.25


def test_text_srt_and_vtt_come_back_as_text(client: openai.OpenAI, speech: Path) -> None:
    text = client.audio.transcriptions.create(file=speech, model="whisper-1", response_format="text")
    srt = client.audio.transcriptions.create(file=speech, model="whisper-1", response_format="srt")
    vtt = client.audio.transcriptions.create(file=speech, model="whisper-1", response_format="vtt")
    assert wer(" ".join(SPOKEN), text) < 0.25
    assert srt.startswith("1\n00:00:0") and " --> " in srt
    assert vtt.startswith("WEBVTT") and " --> " in vtt


def test_verbose_json_has_openais_segment_fields(client: openai.OpenAI, speech: Path) -> None:
    result = client.audio.transcriptions.create(file=speech, model="whisper-1", response_format="verbose_json")
    assert isinstance(result, TranscriptionVerbose)
    raw = result.model_dump()
    assert raw["task"] == "transcribe" and result.language == "english" and result.duration > 3
    assert result.segments and result.words is None
    for segment in result.segments:
        assert segment.tokens and segment.end > segment.start and segment.avg_logprob < 0
        assert {"seek", "temperature", "compression_ratio", "no_speech_prob"} <= set(segment.model_dump())


def test_word_timestamps_are_given_when_asked(client: openai.OpenAI, speech: Path) -> None:
    result = client.audio.transcriptions.create(
        file=speech, model="whisper-1", response_format="verbose_json", timestamp_granularities=["word", "segment"]
    )
    assert result.words and result.segments
    starts = [w.start for w in result.words]
    assert starts == sorted(starts) and all(0 <= w.start <= w.end <= result.duration + 0.05 for w in result.words)
    assert wer(" ".join(SPOKEN), " ".join(w.word for w in result.words)) < 0.25


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # the SDK marks translations deprecated
def test_a_translation_is_english_text_of_italian_speech(client: openai.OpenAI, italian: Path) -> None:
    result = client.audio.translations.create(file=italian, model="whisper-1", response_format="verbose_json")
    assert result.language == "english" and "good morning" in result.text.lower()


def test_streaming_yields_deltas_then_the_done_text(client: openai.OpenAI, tmp_path: Path) -> None:
    path, spoken = long_speech(tmp_path / "lecture.mp3", 75)
    stream = client.audio.transcriptions.create(file=path, model="whisper-1", stream=True)
    events = list(stream)
    kinds = [e.type for e in events]
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    done = events[-1]
    assert kinds[-1] == "transcript.text.done" and set(kinds[:-1]) == {"transcript.text.delta"}
    assert isinstance(done, TranscriptionTextDoneEvent)
    assert len(deltas) >= 2 and done.text and wer(spoken, done.text) < 0.25
    assert "".join(deltas).split() == done.text.split()


def test_a_wrong_key_is_an_authentication_error(server: HttpDaemon, speech: Path) -> None:
    with (
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0) as stranger,
        pytest.raises(openai.AuthenticationError) as info,
    ):
        stranger.audio.transcriptions.create(file=speech, model="whisper-1")
    assert info.value.status_code == 401 and info.value.code == "invalid_api_key"


def test_an_unknown_response_format_is_a_bad_request(client: openai.OpenAI, speech: Path) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.audio.transcriptions.create(file=speech, model="whisper-1", response_format="xml")  # type: ignore[call-overload]  # on purpose
    assert info.value.param == "response_format"


def test_words_without_verbose_json_are_a_bad_request(client: openai.OpenAI, speech: Path) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.audio.transcriptions.create(file=speech, model="whisper-1", timestamp_granularities=["word"])
    assert info.value.param == "timestamp_granularities"


def test_a_file_that_is_not_audio_is_a_bad_request_naming_it(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.audio.transcriptions.create(file=("notes.mp3", b"shopping list: bread\n" * 200), model="whisper-1")
    assert info.value.code == "not_audio" and "notes.mp3" in info.value.message and "spool" not in info.value.message


def test_an_unknown_model_is_a_bad_request(client: openai.OpenAI, speech: Path) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.audio.transcriptions.create(file=speech, model="no-such-model")
    assert (info.value.code, info.value.param) == ("model_not_found", "model")


def test_a_provider_is_picked_by_its_name_as_the_model(client: openai.OpenAI, tmp_path: Path) -> None:
    note = tmp_path / "memo.txt"
    note.write_text("hello from echo")
    with pytest.raises(openai.BadRequestError) as info:  # echo takes no options: nanogpt/x style is refused
        client.audio.transcriptions.create(file=note, model="echo/large")
    assert info.value.code == "invalid_options"


def test_models_lists_whisper_1_and_the_providers(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"whisper-1", "whisper", "echo"} <= ids


def test_the_same_idempotency_key_runs_one_job(server: HttpDaemon, speech: Path) -> None:
    with server.client() as http:
        answers = [
            http.post(
                "/v1/audio/transcriptions",
                data={"model": "whisper-1"},
                files={"file": ("memo.mp3", speech.read_bytes())},
                headers={"Idempotency-Key": "once-only-1"},
            )
            for _ in range(2)
        ]
        jobs = http.get("/v1/jobs", params={"limit": 500}).json()["jobs"]
    assert [a.status_code for a in answers] == [200, 200] and answers[0].json() == answers[1].json()
    assert sum(1 for j in jobs if j["request_id"] == "once-only-1") == 1


def test_the_same_audio_sent_twice_is_transcribed_once(
    server: HttpDaemon, client: openai.OpenAI, tmp_path: Path
) -> None:
    path = synthesise_sentences(SENTENCES[2:3], tmp_path / "twice.wav")
    first = client.audio.transcriptions.create(file=path, model="whisper-1")
    second = client.audio.transcriptions.create(file=("again.wav", path.read_bytes()), model="whisper-1")
    reused = server.daemon.named("item.reused")
    assert first.text == second.text and any(e.get("input") == "again.wav" for e in reused)
