"""The sarvam plugin against the fake Sarvam server over loopback HTTP: flows and resumption."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from stenod.provider import (
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
from stenod_sarvam import SarvamOptions, SarvamProvider, SarvamSettings
from support.server import ThreadedServer, serve
from tests.fakes.context import MemoryStepContext, SimulatedCrash
from tests.fakes.sarvam import FakeSarvam, SarvamControl

KEY = "test-sarvam-key"


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
    return SarvamProvider(SarvamSettings(api_key=SecretStr(KEY), base_url=server.url), http)


def make_batch(
    folder: Path,
    names: Sequence[str],
    *,
    task: Task = Task.TRANSCRIBE,
    language: str | None = "hi-IN",
    options: SarvamOptions | None = None,
    targets: tuple[str, ...] = (),
) -> Batch:
    items = []
    for index, name in enumerate(names):
        path = folder / f"{index}" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes(range(256)) * (4 + index))
        st = path.stat()
        items.append(BatchItem(f"item-{index}", path, name, st.st_size, 12.5, st.st_dev, st.st_ino))
    return Batch("batch-1", task, tuple(items), language, targets, options or SarvamOptions())


async def finish(provider: SarvamProvider, handle: Handle) -> Status:
    for _ in range(10):
        status = await provider.poll(handle)
        if status.state in (RemoteState.DONE, RemoteState.FAILED):
            return status
    raise AssertionError("the fake job never finished")


async def run(provider: SarvamProvider, batch: Batch) -> tuple[Handle, list[ItemResult]]:
    handle = await provider.submit(batch, MemoryStepContext())
    assert (await finish(provider, handle)).state is RemoteState.DONE
    return handle, list(await provider.fetch(handle))


async def test_diarized_job_gives_one_transcript_per_file_with_speakers(
    provider: SarvamProvider, fake: SarvamControl, tmp_path: Path
) -> None:
    batch = make_batch(tmp_path, ["a.wav", "b.mp3"], options=SarvamOptions(with_diarization=True, num_speakers=2))
    handle, results = await run(provider, batch)
    assert [r.item_id for r in results] == ["item-0", "item-1"]
    for result, item in zip(results, batch.items, strict=True):
        assert result.error is None and result.transcript is not None
        assert result.transcript.text.startswith(f"Sentence 1 of {item.path.stem} ({item.size} bytes).")
        assert {s.speaker for s in result.transcript.segments} == {"0", "1"}
        assert result.transcript.provider_job_id == handle["job_id"]
        assert result.transcript.language == "hi-IN"


async def test_job_is_created_with_the_documented_parameters(
    provider: SarvamProvider, fake: SarvamControl, tmp_path: Path
) -> None:
    options = SarvamOptions(with_diarization=True, num_speakers=2, mode="verbatim")
    await run(provider, make_batch(tmp_path, ["a.wav"], options=options))
    (job,) = (await fake.stats())["jobs"].values()
    assert job["kind"] == "stt"
    assert job["parameters"] == {
        "model": "saaras:v3",
        "mode": "verbatim",
        "language_code": "hi-IN",
        "with_timestamps": True,
        "with_diarization": True,
        "num_speakers": 2,
    }


async def test_auto_language_is_sent_as_unknown(provider: SarvamProvider, fake: SarvamControl, tmp_path: Path) -> None:
    await run(provider, make_batch(tmp_path, ["a.wav"], language="auto"))
    (job,) = (await fake.stats())["jobs"].values()
    assert job["parameters"]["language_code"] == "unknown"


async def test_timestamp_chunks_become_segments_without_speakers(
    provider: SarvamProvider, fake: SarvamControl, tmp_path: Path
) -> None:
    _, (result,) = await run(provider, make_batch(tmp_path, ["a.wav"]))
    assert result.transcript is not None
    assert len(result.transcript.segments) >= 2
    assert all(s.speaker is None and s.end > s.start for s in result.transcript.segments)


async def test_translate_task_runs_the_translate_job(
    provider: SarvamProvider, fake: SarvamControl, tmp_path: Path
) -> None:
    options = SarvamOptions(prompt="a support call", with_diarization=True)
    batch = make_batch(tmp_path, ["call.wav"], task=Task.TRANSLATE, language=None, options=options, targets=("en-IN",))
    _, (result,) = await run(provider, batch)
    (job,) = (await fake.stats())["jobs"].values()
    assert job["kind"] == "translate"
    assert job["parameters"] == {"model": "saaras:v2.5", "prompt": "a support call", "with_diarization": True}
    assert result.transcript is not None and result.transcript.text.startswith("Translated sentence 1 of call")
    assert {s.speaker for s in result.transcript.segments} == {"0", "1"}


async def test_translation_into_another_language_than_english_is_refused_before_any_call(
    provider: SarvamProvider, fake: SarvamControl, tmp_path: Path
) -> None:
    batch = make_batch(tmp_path, ["a.wav"], task=Task.TRANSLATE, targets=("ta-IN",))
    with pytest.raises(PermanentError, match="only into English"):
        await provider.submit(batch, MemoryStepContext())
    assert (await fake.stats())["calls"] == {}


async def test_blob_host_never_receives_the_api_key(
    provider: SarvamProvider, fake: SarvamControl, tmp_path: Path
) -> None:
    await run(provider, make_batch(tmp_path, ["a.wav", "b.wav"]))
    stats = await fake.stats()
    assert stats["uploads"] == 2 and stats["downloads"] == 2
    assert stats["blob_requests_with_api_key"] == 0


async def test_checkpoints_and_handle_hold_no_secret_or_presigned_url(
    provider: SarvamProvider, fake: SarvamControl, tmp_path: Path
) -> None:
    ctx = MemoryStepContext()
    handle = await provider.submit(make_batch(tmp_path, ["a.wav"]), ctx)
    stored = json.dumps([ctx.checkpoints, dict(handle)])
    assert KEY not in stored and "sig=" not in stored and "__blob__" not in stored


async def test_uploaded_bytes_are_the_input_file(provider: SarvamProvider, fake: SarvamControl, tmp_path: Path) -> None:
    batch = make_batch(tmp_path, ["a.wav", "b.wav"])
    await provider.submit(batch, MemoryStepContext())
    (job,) = (await fake.stats())["jobs"].values()
    assert job["uploads"] == {"a.wav": batch.items[0].size, "b.wav": batch.items[1].size}


async def test_same_name_twice_in_a_batch_is_uploaded_under_distinct_names(
    provider: SarvamProvider, fake: SarvamControl, tmp_path: Path
) -> None:
    _, results = await run(provider, make_batch(tmp_path, ["x.wav", "x.wav"]))
    (job,) = (await fake.stats())["jobs"].values()
    assert len(job["uploads"]) == 2
    assert all(r.transcript is not None for r in results)


# Checkpoints for a two-file batch: 1 created, 2-3 uploaded, 4 started.
@pytest.mark.parametrize("crash_after", [1, 2, 3, 4])
async def test_crash_after_any_checkpoint_resumes_the_same_job(
    provider: SarvamProvider, fake: SarvamControl, tmp_path: Path, crash_after: int
) -> None:
    batch = make_batch(tmp_path, ["a.wav", "b.wav"])
    ctx = MemoryStepContext(crash_after_checkpoints=crash_after)
    with pytest.raises(SimulatedCrash):
        await provider.submit(batch, ctx)
    handle = await provider.submit(batch, ctx.resumed())
    stats = await fake.stats()
    assert (stats["jobs_created"], stats["jobs_started"], stats["start_calls"]) == (1, 1, 1)
    assert (await finish(provider, handle)).state is RemoteState.DONE
    assert all(r.transcript is not None for r in await provider.fetch(handle))


async def test_start_whose_checkpoint_was_lost_is_not_sent_again(
    provider: SarvamProvider, fake: SarvamControl, tmp_path: Path
) -> None:
    batch = make_batch(tmp_path, ["a.wav"])
    ctx = MemoryStepContext()
    await provider.submit(batch, ctx)
    before_start = ctx.checkpoints[-2]  # uploads done, start not yet recorded
    assert before_start["started"] is False
    await provider.submit(batch, MemoryStepContext(before_start))
    stats = await fake.stats()
    assert (stats["jobs_created"], stats["start_calls"]) == (1, 1)


async def test_expired_upload_url_is_retried_with_fresh_urls_in_the_same_job(
    provider: SarvamProvider, fake: SarvamControl, tmp_path: Path
) -> None:
    await fake.faults([{"route": "upload_files", "expired_urls": True}])
    batch = make_batch(tmp_path, ["a.wav"])
    ctx = MemoryStepContext()
    with pytest.raises(RetryableError, match=r"refused the upload of a\.wav"):
        await provider.submit(batch, ctx)
    await provider.submit(batch, ctx.resumed())
    stats = await fake.stats()
    assert (stats["jobs_created"], stats["calls"]["upload_files"], stats["jobs_started"]) == (1, 2, 1)


async def test_more_files_than_the_limit_are_refused_before_any_call(
    provider: SarvamProvider, fake: SarvamControl, tmp_path: Path
) -> None:
    batch = make_batch(tmp_path, [f"f{i}.wav" for i in range(25)])
    with pytest.raises(PermanentError, match="max_files=20"):
        await provider.submit(batch, MemoryStepContext())
    assert (await fake.stats())["calls"] == {}


async def test_twenty_files_fit_in_one_job(provider: SarvamProvider, fake: SarvamControl, tmp_path: Path) -> None:
    _, results = await run(provider, make_batch(tmp_path, [f"f{i}.wav" for i in range(20)]))
    assert len(results) == 20 and all(r.transcript is not None for r in results)
    assert (await fake.stats())["jobs_created"] == 1


async def test_fetch_after_the_finishing_poll_makes_no_extra_status_call(
    provider: SarvamProvider, fake: SarvamControl, tmp_path: Path
) -> None:
    handle = await provider.submit(make_batch(tmp_path, ["a.wav"]), MemoryStepContext())
    await finish(provider, handle)
    before = (await fake.stats())["calls"]["status"]
    await provider.fetch(handle)
    assert (await fake.stats())["calls"]["status"] == before
