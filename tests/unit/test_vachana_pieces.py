"""Pure parts of the vachana plugin: options, limits, state mapping, error bodies."""

from __future__ import annotations

import json

import httpx
import pytest
from pydantic import ValidationError

from stenod.provider import AuthError, PermanentError, RemoteState, RetryableError
from stenod.wiring.plugin_discovery import check_provider_class
from stenod_vachana import VachanaOptions, VachanaProvider, VachanaSettings
from stenod_vachana.api import JobStatus, raise_for_status
from stenod_vachana.provider import request_id_for
from stenod_vachana.results import item_results, remote_state


def test_provider_class_passes_the_plugin_checks() -> None:
    check_provider_class("vachana", VachanaProvider)


def test_declared_limits_follow_the_documented_submit_api() -> None:
    limits = VachanaProvider.limits
    assert (limits.max_files, limits.min_poll_seconds) == (10, 60.0)
    assert limits.max_batch_bytes is not None and limits.max_batch_bytes <= 80_000_000
    assert limits.max_audio_seconds is not None and limits.max_audio_seconds < 3600
    assert limits.formats == {"wav", "flac", "aac", "m4a", "ogg", "oga", "opus"}


def test_request_id_is_derived_from_the_batch_only() -> None:
    assert request_id_for("01JD") == request_id_for("01JD") != request_id_for("01JE")


def test_native_numerals_need_number_formatting() -> None:
    with pytest.raises(ValidationError):
        VachanaOptions(itn_native_numerals=True)


def test_form_fields() -> None:
    assert VachanaOptions().form_fields("ta-IN") == [
        ("language_code", "ta-IN"),
        ("is_multi_channel", "false"),
        ("format", "verbatim"),
    ]


def status(**body: object) -> JobStatus:
    return JobStatus.model_validate({"job_id": "batch_1", **body})


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"status": "submitted"}, RemoteState.PENDING),
        ({"status": "processing"}, RemoteState.RUNNING),
        ({"status": "completed", "results": None}, RemoteState.RUNNING),
        ({"status": "completed", "results": []}, RemoteState.DONE),
        ({"status": "failed", "error": "x"}, RemoteState.FAILED),
        ({"status": "failed", "results": [{"filename": "a.wav", "status": "failed"}]}, RemoteState.DONE),
        ({"status": "warming_up"}, RemoteState.RUNNING),
    ],
)
def test_statuses_map_to_remote_states(body: dict[str, object], expected: RemoteState) -> None:
    assert remote_state(status(**body)) is expected


def test_a_file_missing_from_the_results_gets_its_own_error() -> None:
    (result,) = item_results(status(status="completed", results=[]), [("i", "a.wav", None)], "hi-IN")
    assert result.error is not None and "a.wav" in result.error.message


def test_detected_language_is_the_most_common_one_when_none_was_asked() -> None:
    segment = {"start_time": 0, "end_time": 1, "text": "x", "language_detected": "ta-IN"}
    other = {**segment, "language_detected": "en-IN"}
    job = status(
        status="completed",
        results=[{"filename": "a.wav", "status": "completed", "segments": [segment, segment, other]}],
    )
    (result,) = item_results(job, [("i", "a.wav", 5.0)], "hi-IN,en-IN")
    assert result.transcript is not None and result.transcript.language == "ta-IN"
    assert result.transcript.duration == 5.0


def answer(status_code: int, body: object, **headers: str) -> httpx.Response:
    content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    return httpx.Response(status_code, content=content, headers=headers, request=httpx.Request("POST", "https://x"))


@pytest.mark.parametrize(
    "body",
    [
        {"detail": {"error_code": "FILE_TOO_LARGE", "message": "too big", "status_code": 400}},
        {"error_code": "FILE_TOO_LARGE", "message": "too big"},
        {"error": "FILE_TOO_LARGE", "message": "too big"},
        {"success": False, "error": {"type": "INVALID_REQUEST_ERROR", "message": "too big"}},
        "too big",
    ],
)
def test_every_error_body_shape_yields_the_message_and_request_id(body: object) -> None:
    with pytest.raises(PermanentError, match=r"too big.*X-API-Request-ID stenod-b"):
        raise_for_status(answer(400, body), None, "stenod-b")


def test_401_and_403_are_auth_errors_and_429_is_retryable() -> None:
    for code in (401, 403):
        with pytest.raises(AuthError):
            raise_for_status(answer(code, {"detail": "nope"}), None, "r")
    with pytest.raises(RetryableError) as info:
        raise_for_status(answer(429, {"detail": {"error_code": "RATE_LIMITED"}}, **{"Retry-After": "60"}), None, "r")
    assert info.value.retry_after == 60


def test_base_url_defaults_to_vachanas_api_and_must_be_http() -> None:
    assert VachanaSettings().base_url == "https://api.vachana.ai"
    assert VachanaSettings().resubmit_uncertain is False
    with pytest.raises(ValidationError):
        VachanaSettings(base_url="ftp://x")
