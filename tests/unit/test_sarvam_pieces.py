"""Pure parts of the sarvam plugin: options, limits, state mapping, result normalisation, error mapping."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from stenod.provider import (
    AuthError,
    Batch,
    BatchItem,
    Diarization,
    PermanentError,
    RemoteState,
    RetryableError,
    Task,
)
from stenod.wiring.plugin_discovery import check_provider_class
from stenod_sarvam import SarvamOptions, SarvamProvider, SarvamSettings
from stenod_sarvam.api import JobStatus, raise_for_status
from stenod_sarvam.provider import _plan
from stenod_sarvam.results import remote_state, status_of, transcript_of


def test_provider_class_passes_the_plugin_checks() -> None:
    check_provider_class("sarvam", SarvamProvider)


def test_declared_limits_follow_the_safe_readings_of_the_docs() -> None:
    limits = SarvamProvider.limits
    assert limits.tasks == {Task.TRANSCRIBE, Task.TRANSLATE}
    assert (limits.max_files, limits.max_audio_seconds, limits.min_poll_seconds) == (20, 3600.0, 5.0)
    assert {"wav", "mp3", "m4a", "ogg", "opus", "flac", "webm", "amr", "wma", "aiff"} <= limits.formats


def test_speech_to_text_defaults() -> None:
    prefix, params = SarvamOptions().job_parameters(Task.TRANSCRIBE, None)
    assert prefix == "/speech-to-text/job/v1"
    assert params == {
        "model": "saaras:v3",
        "language_code": "unknown",
        "with_timestamps": True,
        "with_diarization": False,
    }


def test_translate_job_parameters() -> None:
    options = SarvamOptions(prompt="p", with_diarization=True, num_speakers=3, input_audio_codec="wav")
    prefix, params = options.job_parameters(Task.TRANSLATE, "hi-IN")
    assert prefix == "/speech-to-text-translate/job/v1"
    assert params == {
        "model": "saaras:v2.5",
        "prompt": "p",
        "with_diarization": True,
        "num_speakers": 3,
        "input_audio_codec": "wav",
    }


@pytest.mark.parametrize(
    ("options", "task"),
    [
        (SarvamOptions(mode="translit"), Task.TRANSLATE),
        (SarvamOptions(with_timestamps=True), Task.TRANSLATE),
        (SarvamOptions(prompt="x"), Task.TRANSCRIBE),
    ],
)
def test_options_of_the_other_job_kind_are_refused(options: SarvamOptions, task: Task) -> None:
    with pytest.raises(ValueError, match=r"translate|transcribe"):
        options.job_parameters(task, None)


@pytest.mark.parametrize(
    "raw",
    [
        {"keyterms": ["a"]},
        {"keyterms": ["x" * 65], "model": "saaras:v4"},
        {"num_speakers": 0},
        {"colour": "red"},
    ],
)
def test_invalid_options_are_rejected_when_the_rule_is_loaded(raw: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        SarvamOptions.model_validate(raw)


def job(state: str, **extra: object) -> JobStatus:
    return JobStatus.model_validate({"job_id": "j", "job_state": state, **extra})


DETAIL = {"inputs": [{"file_name": "a.wav"}], "outputs": [], "state": "API Error", "error_message": "bad"}


@pytest.mark.parametrize(
    ("state", "details", "expected"),
    [
        ("Accepted", None, RemoteState.PENDING),
        ("Pending", None, RemoteState.PENDING),
        ("Running", None, RemoteState.RUNNING),
        ("Completed", [DETAIL], RemoteState.DONE),
        ("PartiallyCompleted", [DETAIL], RemoteState.DONE),
        ("Failed", None, RemoteState.FAILED),
        ("Failed", [DETAIL], RemoteState.DONE),
        ("Rebalancing", None, RemoteState.RUNNING),
    ],
)
def test_job_states_map_to_remote_states(state: str, details: object, expected: RemoteState) -> None:
    assert remote_state(job(state, job_details=details)) is expected


def test_progress_comes_from_the_file_counts() -> None:
    status = status_of(job("Running", total_files=4, successful_files_count=1, failed_files_count=1), [])
    assert status.progress == 0.5


def test_failed_file_is_a_failed_item_with_sarvams_reason() -> None:
    status = status_of(job("Completed", job_details=[DETAIL]), [("item-1", "a.wav")])
    (item,) = status.items
    assert item.state is RemoteState.FAILED and item.error is not None and "bad" in item.error.message


RESULT = {
    "transcript": "Hello there. General Kenobi.",
    "language_code": "en-IN",
    "timestamps": {
        "words": ["Hello there.", "General Kenobi."],
        "start_time_seconds": [0, 1.5],
        "end_time_seconds": [1.2, 3],
    },
    "diarized_transcript": {
        "entries": [
            {
                "transcript": "General Kenobi.",
                "start_time_seconds": 1.5,
                "end_time_seconds": 3.0,
                "speaker_id": 1,
            },
            {
                "transcript": "Hello there.",
                "start_time_seconds": 0.0,
                "end_time_seconds": 1.2,
                "speaker_id": "0",
            },
        ]
    },
}


def test_diarized_entries_become_ordered_segments_with_speakers() -> None:
    transcript = transcript_of(RESULT, job_id="j", language=None)
    assert [(s.text, s.speaker) for s in transcript.segments] == [
        ("Hello there.", "0"),
        ("General Kenobi.", "1"),
    ]
    assert (transcript.language, transcript.duration, transcript.provider) == ("en-IN", 3.0, "sarvam")


def test_timestamp_chunks_are_segments_when_there_is_no_diarization() -> None:
    transcript = transcript_of({**RESULT, "diarized_transcript": None}, job_id="j", language="hi-IN", duration=9.0)
    assert [(s.start, s.end, s.speaker) for s in transcript.segments] == [(0, 1.2, None), (1.5, 3, None)]
    assert transcript.duration == 9.0


def test_a_document_without_transcript_is_refused() -> None:
    with pytest.raises(ValueError, match="not a Sarvam result"):
        transcript_of({"timestamps": None}, job_id="j", language=None)


def answer(status: int, body: object = None, **headers: str) -> httpx.Response:
    content = json.dumps(body).encode() if body is not None else b"oops"
    return httpx.Response(status, content=content, headers=headers, request=httpx.Request("GET", "https://x"))


def error_body(code: str, message: str = "m", rid: str | None = "20260101_r") -> dict[str, object]:
    return {"error": {"code": code, "message": message, "request_id": rid}}


def test_403_is_an_auth_error_without_the_echoed_key() -> None:
    with pytest.raises(AuthError) as info:
        raise_for_status(answer(403, error_body("invalid_api_key_error", "bad key SECRET")), "SECRET")
    assert "SECRET" not in info.value.message and "20260101_r" in info.value.message


def test_rate_limit_is_retryable_and_exhausted_quota_is_permanent() -> None:
    with pytest.raises(RetryableError) as info:
        raise_for_status(answer(429, error_body("rate_limit_exceeded_error"), **{"Retry-After": "4"}), None)
    assert info.value.retry_after == 4
    with pytest.raises(PermanentError, match="no credits"):
        raise_for_status(answer(429, error_body("insufficient_quota_error")), None)


def test_validation_error_carries_the_request_id_from_the_header_if_the_body_has_none() -> None:
    response = answer(
        422,
        error_body("unprocessable_entity_error", "body.files : Field required", None),
        **{"x-request-id": "hdr-1"},
    )
    with pytest.raises(PermanentError, match=r"body.files : Field required.*request id hdr-1"):
        raise_for_status(response, None)


def test_plain_text_5xx_is_retryable() -> None:
    with pytest.raises(RetryableError, match="answered 502"):
        raise_for_status(answer(502), None)


def test_base_url_defaults_to_sarvams_api_and_must_be_http() -> None:
    assert SarvamSettings().base_url == "https://api.sarvam.ai"
    assert SarvamSettings(base_url="http://127.0.0.1:9/").base_url == "http://127.0.0.1:9"
    with pytest.raises(ValidationError):
        SarvamSettings(base_url="api.sarvam.ai")


def _batch(diarization: Diarization | None, **options: object) -> Batch:
    item = BatchItem(item_id="i1", path=Path("/in/call.wav"), name="call.wav", size=10)
    return Batch("b1", Task.TRANSCRIBE, (item,), "hi-IN", (), SarvamOptions.model_validate(options), diarization)


def test_a_job_asking_who_spoke_turns_on_sarvams_own_diarization_with_the_most_speakers() -> None:
    assert SarvamProvider.limits.diarization
    asked = _plan(_batch(Diarization(min_speakers=2, max_speakers=3))).parameters
    exact = _plan(_batch(Diarization(num_speakers=2))).parameters
    plain = _plan(_batch(None)).parameters
    assert (asked["with_diarization"], asked["num_speakers"], exact["num_speakers"]) == (True, 3, 2)
    assert plain["with_diarization"] is False and "num_speakers" not in plain


def test_more_speakers_than_sarvam_separates_is_a_permanent_error() -> None:
    with pytest.raises(PermanentError, match="at most 20 speakers, not 25"):
        _plan(_batch(Diarization(max_speakers=25)))
