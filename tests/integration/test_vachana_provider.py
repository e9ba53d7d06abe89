"""The vachana plugin against the fake Vachana server over loopback HTTP."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from stenod.provider import (
    AuthError,
    Batch,
    BatchItem,
    Handle,
    ItemResult,
    PermanentError,
    RemoteState,
    RetryableError,
    Status,
    Task,
)
from stenod_vachana import VachanaOptions, VachanaProvider, VachanaSettings
from support.server import ThreadedServer, serve
from tests.fakes.context import MemoryStepContext, SimulatedCrash
from tests.fakes.vachana import FakeVachana, VachanaControl, VachanaFakeConfig

KEY = "test-vachana-key"
INTERVAL = 0.2  # the fake's minimum poll interval, shortened from Vachana's 60 s


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedServer]:
    with serve(FakeVachana(VachanaFakeConfig(api_key=KEY, poll_interval_seconds=INTERVAL)).app) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


@pytest.fixture
async def fake(server: ThreadedServer, http: httpx.AsyncClient) -> VachanaControl:
    control = VachanaControl(http, server.url)
    await control.reset()
    return control


@pytest.fixture
def settings(server: ThreadedServer) -> VachanaSettings:
    return VachanaSettings(api_key=SecretStr(KEY), base_url=server.url, request_timeout_seconds=2)


@pytest.fixture
def provider(settings: VachanaSettings, http: httpx.AsyncClient) -> VachanaProvider:
    return VachanaProvider(settings, http)


def make_batch(
    folder: Path,
    names: Sequence[str],
    *,
    language: str | None = "hi-IN",
    options: VachanaOptions | None = None,
    sizes: Sequence[int] | None = None,
) -> Batch:
    items = []
    for index, name in enumerate(names):
        path = folder / f"{index}" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if sizes is None:
            path.write_bytes(bytes(range(256)) * (4 + index))
        else:
            with path.open("wb") as sparse:
                sparse.truncate(sizes[index])
        st = os.stat(path)
        items.append(BatchItem(f"item-{index}", path, name, st.st_size, 30.0, st.st_dev, st.st_ino))
    return Batch("batch-7", Task.TRANSCRIBE, tuple(items), language, (), options or VachanaOptions())


async def finish(provider: VachanaProvider, handle: Handle) -> Status:
    """Poll as the dispatcher would: never sooner than the interval, later if told."""
    for _ in range(20):
        await asyncio.sleep(INTERVAL)
        try:
            status = await provider.poll(handle)
        except RetryableError as exc:
            await asyncio.sleep(exc.retry_after or INTERVAL)
            continue
        if status.state in (RemoteState.DONE, RemoteState.FAILED):
            return status
    raise AssertionError("the fake job never finished")


async def run(provider: VachanaProvider, batch: Batch) -> tuple[Handle, list[ItemResult]]:
    handle = await provider.submit(batch, MemoryStepContext())
    assert (await finish(provider, handle)).state is RemoteState.DONE
    return handle, list(await provider.fetch(handle))


async def test_results_keep_speaker_confidence_language_sentiment_and_emotion(
    provider: VachanaProvider, fake: VachanaControl, tmp_path: Path
) -> None:
    handle, results = await run(provider, make_batch(tmp_path, ["a.wav", "b.flac"]))
    assert [r.item_id for r in results] == ["item-0", "item-1"]
    transcript = results[0].transcript
    assert transcript is not None and transcript.text.startswith("segment 1 of a")
    assert transcript.provider_job_id == handle["job_id"] and transcript.language == "hi-IN"
    assert {s.speaker for s in transcript.segments} == {"1", "2"}
    first = transcript.segments[0]
    assert first.confidence is not None and 0 <= first.confidence <= 1
    assert set(first.extra) == {"language_detected", "sentiment", "emotion"}
    assert "sentiment" in transcript.to_json()["segments"][0]["extra"]


async def test_speaker_ids_sent_as_strings_are_read_too(
    provider: VachanaProvider, fake: VachanaControl, tmp_path: Path
) -> None:
    await fake.faults(string_speaker_ids=True)
    _, (result,) = await run(provider, make_batch(tmp_path, ["a.wav"]))
    assert result.transcript is not None and {s.speaker for s in result.transcript.segments} == {"1", "2"}


async def test_submit_sends_the_documented_form_fields(
    provider: VachanaProvider, fake: VachanaControl, tmp_path: Path
) -> None:
    options = VachanaOptions(format="transcribe", itn_native_numerals=True, is_multi_channel=True)
    await provider.submit(make_batch(tmp_path, ["a.wav", "b.wav"], options=options), MemoryStepContext())
    stats = await fake.stats()
    assert stats["submit_fields"] == [
        {
            "language_code": "hi-IN",
            "is_multi_channel": "true",
            "format": "transcribe",
            "itn_native_numerals": "true",
        }
    ]
    (job,) = stats["jobs"].values()
    assert [name for name, _ in job["files"]] == ["a.wav", "b.wav"]


async def test_no_language_asks_for_detection_among_the_ten_batch_languages(
    provider: VachanaProvider, fake: VachanaControl, tmp_path: Path
) -> None:
    await provider.submit(make_batch(tmp_path, ["a.wav"], language="auto"), MemoryStepContext())
    (fields,) = (await fake.stats())["submit_fields"]
    assert fields["language_code"].split(",")[:2] == ["hi-IN", "en-IN"] and fields["language_code"].count(",") == 9


async def test_every_call_of_a_batch_carries_the_same_request_id(
    provider: VachanaProvider, fake: VachanaControl, tmp_path: Path
) -> None:
    await run(provider, make_batch(tmp_path, ["a.wav"]))
    ids = (await fake.stats())["request_ids"]
    assert len(ids) >= 3 and {rid for _, rid in ids} == {"stenod-batch-7"}


async def test_status_sooner_than_the_interval_is_retryable_after_the_servers_delay(
    provider: VachanaProvider, fake: VachanaControl, tmp_path: Path
) -> None:
    handle = await provider.submit(make_batch(tmp_path, ["a.wav"]), MemoryStepContext())
    with pytest.raises(RetryableError, match="RATE_LIMITED") as info:
        await provider.poll(handle)
    assert info.value.retry_after == 1  # the fake rounds the remaining wait up to whole seconds
    assert (await fake.stats())["status_rejected"] == {handle["job_id"]: 1}


async def test_fetch_reuses_the_finished_poll_instead_of_calling_status_again(
    provider: VachanaProvider, fake: VachanaControl, tmp_path: Path
) -> None:
    handle = await provider.submit(make_batch(tmp_path, ["a.wav"]), MemoryStepContext())
    await finish(provider, handle)
    before = (await fake.stats())["calls"]["status"]
    (result,) = await provider.fetch(handle)
    assert result.transcript is not None
    assert (await fake.stats())["calls"]["status"] == before


async def test_fetch_after_a_restart_asks_again_once_the_interval_has_passed(
    settings: VachanaSettings, http: httpx.AsyncClient, fake: VachanaControl, tmp_path: Path
) -> None:
    handle = await VachanaProvider(settings, http).submit(make_batch(tmp_path, ["a.wav"]), MemoryStepContext())
    await finish(VachanaProvider(settings, http), handle)
    restarted = VachanaProvider(settings, http)
    with pytest.raises(RetryableError) as info:
        await restarted.fetch(handle)
    await asyncio.sleep(info.value.retry_after or INTERVAL)
    (result,) = await restarted.fetch(handle)
    assert result.transcript is not None


async def test_crash_after_the_job_id_checkpoint_resumes_the_same_job(
    provider: VachanaProvider, fake: VachanaControl, tmp_path: Path
) -> None:
    batch = make_batch(tmp_path, ["a.wav"])
    ctx = MemoryStepContext(crash_after_checkpoints=2)  # 1: body sent, 2: job id
    with pytest.raises(SimulatedCrash):
        await provider.submit(batch, ctx)
    handle = await provider.submit(batch, ctx.resumed())
    assert (await fake.stats())["jobs_created"] == 1
    assert (await finish(provider, handle)).state is RemoteState.DONE


async def test_crash_between_sending_and_the_answer_is_not_submitted_again(
    provider: VachanaProvider, fake: VachanaControl, tmp_path: Path
) -> None:
    batch = make_batch(tmp_path, ["a.wav"])
    ctx = MemoryStepContext(crash_after_checkpoints=1)
    with pytest.raises(SimulatedCrash):
        await provider.submit(batch, ctx)
    with pytest.raises(PermanentError, match="stenod-batch-7") as info:
        await provider.submit(batch, ctx.resumed())
    assert info.value.code == "vachana_submit_uncertain"
    assert (await fake.stats())["calls"].get("submit", 0) <= 1


async def test_resubmit_uncertain_setting_sends_the_batch_again(
    settings: VachanaSettings, http: httpx.AsyncClient, fake: VachanaControl, tmp_path: Path
) -> None:
    provider = VachanaProvider(settings.model_copy(update={"resubmit_uncertain": True}), http)
    batch = make_batch(tmp_path, ["a.wav"])
    ctx = MemoryStepContext(crash_after_checkpoints=1)
    with pytest.raises(SimulatedCrash):
        await provider.submit(batch, ctx)
    handle = await provider.submit(batch, ctx.resumed())
    assert handle["job_id"] in (await fake.stats())["jobs"]


async def test_server_error_after_the_upload_is_uncertain_not_retried(
    provider: VachanaProvider, fake: VachanaControl, tmp_path: Path
) -> None:
    await fake.faults([{"route": "submit", "status": 500}])
    with pytest.raises(PermanentError, match="Internal Server Error") as info:
        await provider.submit(make_batch(tmp_path, ["a.wav"]), MemoryStepContext())
    assert info.value.code == "vachana_submit_uncertain"


async def test_rate_limited_submit_was_refused_so_the_retry_submits(
    provider: VachanaProvider, fake: VachanaControl, tmp_path: Path
) -> None:
    await fake.faults([{"route": "submit", "status": 429, "retry_after": 3}])
    batch = make_batch(tmp_path, ["a.wav"])
    ctx = MemoryStepContext()
    with pytest.raises(RetryableError) as info:
        await provider.submit(batch, ctx)
    assert info.value.retry_after == 3
    await provider.submit(batch, ctx.resumed())
    assert (await fake.stats())["jobs_created"] == 1


async def test_wrong_key_is_an_auth_error_naming_the_setting(
    settings: VachanaSettings, http: httpx.AsyncClient, fake: VachanaControl, tmp_path: Path
) -> None:
    wrong = VachanaProvider(settings.model_copy(update={"api_key": SecretStr("CANARY-key")}), http)
    with pytest.raises(AuthError) as info:
        await wrong.submit(make_batch(tmp_path, ["a.wav"]), MemoryStepContext())
    assert "[providers.vachana] api_key" in info.value.message and "CANARY" not in info.value.message


@pytest.mark.parametrize("shape", ["detail", "flat", "flat_error", "rest", "text"])
async def test_every_error_body_shape_gives_vachanas_message(
    provider: VachanaProvider, fake: VachanaControl, tmp_path: Path, shape: str
) -> None:
    await fake.faults([{"route": "submit", "status": 400, "shape": shape, "message": "bad sample rate"}])
    with pytest.raises(PermanentError, match="bad sample rate"):
        await provider.submit(make_batch(tmp_path, ["a.wav"]), MemoryStepContext())


async def test_body_over_the_servers_limit_is_refused_permanently(
    provider: VachanaProvider, fake: VachanaControl, tmp_path: Path
) -> None:
    await fake.config(max_body_bytes=1500)
    with pytest.raises(PermanentError, match="413") as info:
        await provider.submit(make_batch(tmp_path, ["a.wav", "b.wav"]), MemoryStepContext())
    assert "FILE_TOO_LARGE" in info.value.message


@pytest.mark.parametrize(("rule", "code"), [({"status": 503}, "http_503"), ({"malformed": True}, "malformed_response")])
async def test_status_faults_are_retryable(
    provider: VachanaProvider, fake: VachanaControl, tmp_path: Path, rule: dict[str, object], code: str
) -> None:
    handle = await provider.submit(make_batch(tmp_path, ["a.wav"]), MemoryStepContext())
    await asyncio.sleep(INTERVAL)
    await fake.faults([{"route": "status", **rule}])
    with pytest.raises(RetryableError) as info:
        await provider.poll(handle)
    assert info.value.code == code


async def test_unknown_job_is_permanent(provider: VachanaProvider, fake: VachanaControl) -> None:
    handle: Handle = {"job_id": "batch_000000000000", "request_id": "stenod-x", "language": None, "files": []}
    with pytest.raises(PermanentError, match="no longer knows"):
        await provider.poll(handle)


async def test_a_failing_file_fails_alone(provider: VachanaProvider, fake: VachanaControl, tmp_path: Path) -> None:
    await fake.faults(fail_files=["bad*"])
    handle = await provider.submit(make_batch(tmp_path, ["ok.wav", "bad.wav"]), MemoryStepContext())
    status = await finish(provider, handle)
    assert [i.state for i in status.items] == [RemoteState.DONE, RemoteState.FAILED]
    ok, bad = await provider.fetch(handle)
    assert ok.transcript is not None
    assert bad.error is not None and "bad.wav" in bad.error.message and "Audio decoding failed" in bad.error.message


async def test_failed_job_without_results_is_failed_with_the_reason(
    provider: VachanaProvider, fake: VachanaControl, tmp_path: Path
) -> None:
    await fake.faults(job_failure="transcription cluster unavailable")
    handle = await provider.submit(make_batch(tmp_path, ["a.wav"]), MemoryStepContext())
    status = await finish(provider, handle)
    assert status.state is RemoteState.FAILED
    assert status.error is not None and "cluster unavailable" in status.error.message


async def test_more_than_ten_files_are_refused_before_any_call(
    provider: VachanaProvider, fake: VachanaControl, tmp_path: Path
) -> None:
    with pytest.raises(PermanentError, match="max_files=10"):
        await provider.submit(make_batch(tmp_path, [f"f{i}.wav" for i in range(11)]), MemoryStepContext())
    assert (await fake.stats())["calls"] == {}


async def test_more_than_80_megabytes_are_refused_before_any_call(
    provider: VachanaProvider, fake: VachanaControl, tmp_path: Path
) -> None:
    batch = make_batch(tmp_path, ["a.wav", "b.wav"], sizes=[40_000_000, 40_000_000])
    with pytest.raises(PermanentError, match="max_batch_bytes"):
        await provider.submit(batch, MemoryStepContext())
    assert (await fake.stats())["calls"] == {}


async def test_number_formatting_outside_hindi_and_english_is_refused_before_any_call(
    provider: VachanaProvider, fake: VachanaControl, tmp_path: Path
) -> None:
    batch = make_batch(tmp_path, ["a.wav"], language="ta-IN", options=VachanaOptions(format="transcribe"))
    with pytest.raises(PermanentError, match="only for hi-IN and en-IN"):
        await provider.submit(batch, MemoryStepContext())
    assert (await fake.stats())["calls"] == {}
