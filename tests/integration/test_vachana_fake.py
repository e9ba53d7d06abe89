"""The fake Vachana server enforces the documented submit/status contract, for any multipart client."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from support.server import serve
from tests.fakes.vachana import FakeVachana, VachanaFakeConfig

KEY = "fake-contract-key"
SUBMIT = "/stt/v3/batch/submit"


@pytest.fixture
def api() -> Iterator[httpx.Client]:
    config = VachanaFakeConfig(api_key=KEY, poll_interval_seconds=0.3, max_body_bytes=50_000)
    with (
        serve(FakeVachana(config).app) as server,
        httpx.Client(base_url=server.url, headers={"X-API-Key-ID": KEY, "X-API-Request-ID": "req-1"}) as client,
    ):
        yield client


def files(count: int, size: int = 100) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("audio_files", (f"f{i}.wav", b"R" * size, "audio/wav")) for i in range(count)]


def test_submit_needs_the_key_header(api: httpx.Client) -> None:
    response = api.post(SUBMIT, files=files(1), data={"language_code": "hi-IN"}, headers={"X-API-Key-ID": "x"})
    assert response.status_code == 401 and response.json()["detail"]["error_code"] == "UNAUTHORIZED"


@pytest.mark.parametrize(
    ("count", "size", "status", "code"),
    [(11, 100, 400, "TOO_MANY_FILES"), (2, 30_000, 413, "FILE_TOO_LARGE"), (1, 0, 400, "BAD_REQUEST")],
)
def test_submit_limits_are_enforced(api: httpx.Client, count: int, size: int, status: int, code: str) -> None:
    response = api.post(SUBMIT, files=files(count, size), data={"language_code": "hi-IN"})
    assert response.status_code == status and code in response.text


def test_submit_needs_a_language_and_a_supported_format(api: httpx.Client) -> None:
    assert api.post(SUBMIT, files=files(1)).status_code == 400
    mp3 = [("audio_files", ("a.mp3", b"ID3", "audio/mpeg"))]
    response = api.post(SUBMIT, files=mp3, data={"language_code": "hi-IN"})
    assert response.status_code == 400 and response.json()["error"]["type"] == "INVALID_REQUEST_ERROR"


def test_status_progresses_with_inline_results_and_enforces_the_poll_interval(api: httpx.Client) -> None:
    submitted = api.post(SUBMIT, files=files(2), data={"language_code": "ta-IN"}).json()
    assert submitted["status"] == "submitted" and submitted["file_count"] == 2
    status_url = f"/stt/v3/batch/status/{submitted['job_id']}"
    too_soon = api.get(status_url)
    assert too_soon.status_code == 429 and too_soon.headers["Retry-After"] == "1"
    states = []
    for _ in range(2):
        time.sleep(0.3)
        states.append(api.get(status_url).json())
    assert [s["status"] for s in states] == ["processing", "completed"]
    assert states[0]["results"] is None
    (first, _) = states[1]["results"]
    assert first["filename"] == "f0.wav" and first["segments"][0]["language_detected"] == "ta-IN"


def test_unknown_job_is_404(api: httpx.Client) -> None:
    assert api.get("/stt/v3/batch/status/batch_nope").status_code == 404
