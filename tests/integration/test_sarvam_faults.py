"""Every fault the fake Sarvam server can inject ends in the right error class or state."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from stenod.provider import AuthError, PermanentError, RemoteState, RetryableError, Task
from stenod_sarvam import SarvamOptions, SarvamProvider, SarvamSettings
from support.server import ThreadedServer, serve
from tests.fakes.context import MemoryStepContext
from tests.fakes.sarvam import FakeSarvam, SarvamControl
from tests.integration.test_sarvam_provider import KEY, finish, make_batch


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedServer]:
    with serve(FakeSarvam().app) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


@pytest.fixture
async def fake(server: ThreadedServer, http: httpx.AsyncClient) -> SarvamControl:
    control = SarvamControl(http, server.url)
    await control.reset()
    return control


@pytest.fixture
def provider(server: ThreadedServer, http: httpx.AsyncClient) -> SarvamProvider:
    return SarvamProvider(SarvamSettings(api_key=SecretStr(KEY), base_url=server.url, request_timeout_seconds=2), http)


async def test_wrong_key_is_an_auth_error_that_names_the_setting_but_not_the_key(
    server: ThreadedServer, http: httpx.AsyncClient, fake: SarvamControl, tmp_path: Path
) -> None:
    wrong = SarvamProvider(SarvamSettings(api_key=SecretStr("CANARY-wrong-key"), base_url=server.url), http)
    with pytest.raises(AuthError) as info:
        await wrong.submit(make_batch(tmp_path, ["a.wav"]), MemoryStepContext())
    assert "[providers.sarvam] api_key" in info.value.message and "request id" in info.value.message
    assert "CANARY" not in info.value.message


async def test_missing_key_is_an_auth_error_without_any_call(
    server: ThreadedServer, http: httpx.AsyncClient, fake: SarvamControl, tmp_path: Path
) -> None:
    keyless = SarvamProvider(SarvamSettings(base_url=server.url), http)
    with pytest.raises(AuthError, match="no API key"):
        await keyless.submit(make_batch(tmp_path, ["a.wav"]), MemoryStepContext())
    assert (await fake.stats())["calls"] == {}


async def test_rate_limit_is_retryable_after_the_servers_delay(
    provider: SarvamProvider, fake: SarvamControl, tmp_path: Path
) -> None:
    await fake.faults([{"route": "init", "status": 429, "retry_after": 7}])
    with pytest.raises(RetryableError) as info:
        await provider.submit(make_batch(tmp_path, ["a.wav"]), MemoryStepContext())
    assert info.value.retry_after == 7


async def test_exhausted_credits_are_permanent(provider: SarvamProvider, fake: SarvamControl, tmp_path: Path) -> None:
    await fake.faults([{"route": "init", "status": 429, "code": "insufficient_quota_error", "message": "No credits"}])
    with pytest.raises(PermanentError) as info:
        await provider.submit(make_batch(tmp_path, ["a.wav"]), MemoryStepContext())
    assert info.value.code == "sarvam_insufficient_quota" and "No credits" in info.value.message


async def test_validation_error_is_permanent_with_message_and_request_id(
    provider: SarvamProvider, fake: SarvamControl, tmp_path: Path
) -> None:
    await fake.faults([{"route": "init", "status": 400, "message": "body.job_parameters.model : bad model"}])
    with pytest.raises(PermanentError) as info:
        await provider.submit(make_batch(tmp_path, ["a.wav"]), MemoryStepContext())
    assert "bad model" in info.value.message and "(request id 20" in info.value.message


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_on_status_are_retryable(
    provider: SarvamProvider, fake: SarvamControl, tmp_path: Path, status: int
) -> None:
    handle = await provider.submit(make_batch(tmp_path, ["a.wav"]), MemoryStepContext())
    await fake.faults([{"route": "status", "status": status}])
    with pytest.raises(RetryableError, match=f"answered {status}"):
        await provider.poll(handle)
    assert (await finish(provider, handle)).state is RemoteState.DONE


@pytest.mark.parametrize(
    ("rule", "code"),
    [({"malformed": True}, "malformed_response"), ({"reset": True}, "network"), ({"delay": 3}, "timeout")],
)
async def test_garbage_dropped_connections_and_slow_answers_are_retryable(
    provider: SarvamProvider, fake: SarvamControl, tmp_path: Path, rule: dict[str, object], code: str
) -> None:
    handle = await provider.submit(make_batch(tmp_path, ["a.wav"]), MemoryStepContext())
    await fake.faults([{"route": "status", **rule}])
    with pytest.raises(RetryableError) as info:
        await provider.poll(handle)
    assert info.value.code == code


async def test_a_failing_file_fails_alone(provider: SarvamProvider, fake: SarvamControl, tmp_path: Path) -> None:
    await fake.faults(fail_files=["*bad*"])
    handle = await provider.submit(make_batch(tmp_path, ["good.wav", "bad.wav"]), MemoryStepContext())
    status = await finish(provider, handle)
    assert status.state is RemoteState.DONE
    assert [i.state for i in status.items] == [RemoteState.DONE, RemoteState.FAILED]
    good, bad = await provider.fetch(handle)
    assert good.transcript is not None and good.error is None
    assert bad.transcript is None and bad.error is not None
    assert "bad.wav" in bad.error.message and "Audio could not be decoded" in bad.error.message


async def test_partially_completed_job_is_done_with_per_file_errors(
    provider: SarvamProvider, fake: SarvamControl, tmp_path: Path
) -> None:
    await fake.faults(fail_files=["bad*"], partial_state=True)
    handle = await provider.submit(make_batch(tmp_path, ["ok.wav", "bad.wav"]), MemoryStepContext())
    assert (await finish(provider, handle)).state is RemoteState.DONE
    assert [r.error is None for r in await provider.fetch(handle)] == [True, False]


async def test_job_where_every_file_failed_reports_each_files_error(
    provider: SarvamProvider, fake: SarvamControl, tmp_path: Path
) -> None:
    await fake.faults(fail_files=["*"])
    handle = await provider.submit(make_batch(tmp_path, ["a.wav", "b.wav"]), MemoryStepContext())
    assert (await finish(provider, handle)).state is RemoteState.DONE
    results = await provider.fetch(handle)
    assert all(r.error is not None and r.error.code == "sarvam_file_failed" for r in results)


async def test_failed_job_without_file_details_is_failed_with_sarvams_reason(
    provider: SarvamProvider, fake: SarvamControl, tmp_path: Path
) -> None:
    await fake.faults(job_failure="Storage container unavailable")
    handle = await provider.submit(make_batch(tmp_path, ["a.wav"]), MemoryStepContext())
    status = await finish(provider, handle)
    assert status.state is RemoteState.FAILED
    assert status.error is not None and "Storage container unavailable" in status.error.message


async def test_expired_download_url_is_retryable_and_a_second_fetch_succeeds(
    provider: SarvamProvider, fake: SarvamControl, tmp_path: Path
) -> None:
    handle = await provider.submit(make_batch(tmp_path, ["a.wav"]), MemoryStepContext())
    await finish(provider, handle)
    await fake.faults([{"route": "download_files", "expired_urls": True}])
    with pytest.raises(RetryableError, match="refused the download") as info:
        await provider.fetch(handle)
    assert "sig=" not in info.value.message
    (result,) = await provider.fetch(handle)
    assert result.transcript is not None


async def test_blob_upload_failure_is_retryable_and_resumes_the_job(
    provider: SarvamProvider, fake: SarvamControl, tmp_path: Path
) -> None:
    await fake.faults([{"route": "blob_put", "status": 503, "match": "b.wav"}])
    batch = make_batch(tmp_path, ["a.wav", "b.wav"])
    ctx = MemoryStepContext()
    with pytest.raises(RetryableError):
        await provider.submit(batch, ctx)
    await provider.submit(batch, ctx.resumed())
    stats = await fake.stats()
    assert (stats["jobs_created"], stats["uploads"], stats["jobs_started"]) == (1, 2, 1)


async def test_a_blob_refusal_that_quotes_the_api_key_is_reported_without_it(
    provider: SarvamProvider, fake: SarvamControl, tmp_path: Path
) -> None:
    """Found by a single-daemon chaos run (seed 869091928): the blob host's 401 quoting the
    Sarvam key went, unscrubbed, into the retry's error and so into the journal."""
    await fake.faults([{"route": "blob_put", "status": 401, "message": f"invalid key {KEY} for this account"}])
    with pytest.raises(RetryableError, match="refused the upload") as info:
        await provider.submit(make_batch(tmp_path, ["a.wav"]), MemoryStepContext())
    assert KEY not in info.value.message and "***" in info.value.message


async def test_cut_short_result_file_is_retryable(
    provider: SarvamProvider, fake: SarvamControl, tmp_path: Path
) -> None:
    handle = await provider.submit(make_batch(tmp_path, ["a.wav"]), MemoryStepContext())
    await finish(provider, handle)
    await fake.faults([{"route": "blob_get", "malformed": True}])
    with pytest.raises(RetryableError, match="not valid JSON"):
        await provider.fetch(handle)


async def test_options_the_translate_job_does_not_take_are_refused(
    provider: SarvamProvider, fake: SarvamControl, tmp_path: Path
) -> None:
    batch = make_batch(tmp_path, ["a.wav"], task=Task.TRANSLATE, options=SarvamOptions(mode="verbatim"))
    with pytest.raises(PermanentError, match="'mode' applies only"):
        await provider.submit(batch, MemoryStepContext())
