"""The fake Sarvam server enforces the documented contract (so plugin tests against it mean something)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from support.server import ThreadedServer, serve
from tests.fakes.sarvam import FakeSarvam, SarvamFakeConfig

KEY = "fake-contract-key"
STT = "/speech-to-text/job/v1"


@pytest.fixture
def api() -> Iterator[httpx.Client]:
    server: ThreadedServer
    with (
        serve(FakeSarvam(SarvamFakeConfig(api_key=KEY)).app) as server,
        httpx.Client(base_url=server.url, headers={"api-subscription-key": KEY}) as client,
    ):
        yield client


def new_job(api: httpx.Client, **params: object) -> str:
    response = api.post(STT, json={"job_parameters": params})
    assert response.status_code == 202
    return str(response.json()["job_id"])


def upload_url(api: httpx.Client, job_id: str, name: str = "a.wav") -> str:
    response = api.post(f"{STT}/upload-files", json={"job_id": job_id, "files": [name]})
    response.raise_for_status()
    return str(response.json()["upload_urls"][name]["file_url"])


def put(url: str, body: bytes = b"RIFF0000", **headers: str) -> httpx.Response:
    return httpx.put(url, content=body, headers={"x-ms-blob-type": "BlockBlob", **headers})


def test_api_calls_without_the_subscription_key_get_403(api: httpx.Client) -> None:
    response = api.post(STT, json={"job_parameters": {}}, headers={"api-subscription-key": ""})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "invalid_api_key_error"
    assert response.headers["x-request-id"] == response.json()["error"]["request_id"]


def test_unknown_job_parameter_is_refused(api: httpx.Client) -> None:
    response = api.post(STT, json={"job_parameters": {"langauge_code": "hi-IN"}})
    assert response.status_code == 422 and "langauge_code" in response.json()["error"]["message"]


def test_blob_put_needs_the_block_blob_header(api: httpx.Client) -> None:
    url = upload_url(api, new_job(api))
    assert httpx.put(url, content=b"x").status_code == 400
    assert put(url).status_code == 201


def test_tampered_or_expired_upload_url_is_refused_like_azure(api: httpx.Client) -> None:
    job_id = new_job(api)
    url = upload_url(api, job_id)
    assert put(url.replace("sp=cw", "sp=rw")).status_code == 403
    api.post("/__fake__/config", json={"upload_url_ttl_seconds": -1}).raise_for_status()
    expired = upload_url(api, job_id)
    response = put(expired)
    assert response.status_code == 403 and "AuthenticationFailed" in response.text


def test_job_states_progress_over_polls_and_start_is_refused_twice(api: httpx.Client) -> None:
    job_id = new_job(api)
    assert api.post(f"{STT}/{job_id}/start").status_code == 400  # nothing uploaded yet
    put(upload_url(api, job_id))
    states = [api.get(f"{STT}/{job_id}/status").json()["job_state"]]
    states.append(api.post(f"{STT}/{job_id}/start").json()["job_state"])
    states += [api.get(f"{STT}/{job_id}/status").json()["job_state"] for _ in range(2)]
    assert states == ["Accepted", "Pending", "Running", "Completed"]
    assert api.post(f"{STT}/{job_id}/start").status_code == 400


def test_download_files_is_post_only_and_knows_only_outputs(api: httpx.Client) -> None:
    job_id = new_job(api)
    put(upload_url(api, job_id))
    api.post(f"{STT}/{job_id}/start")
    while api.get(f"{STT}/{job_id}/status").json()["job_state"] != "Completed":
        pass
    assert api.get(f"{STT}/download-files").status_code == 405
    assert api.post(f"{STT}/download-files", json={"job_id": job_id, "files": ["9.json"]}).status_code == 400
    url = api.post(f"{STT}/download-files", json={"job_id": job_id, "files": ["0.json"]}).json()["download_urls"]
    assert httpx.get(url["0.json"]["file_url"]).json()["transcript"].startswith("Sentence 1 of a")


def test_unknown_job_is_404(api: httpx.Client) -> None:
    response = api.get(f"{STT}/20260101_nope/status")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found_error"
