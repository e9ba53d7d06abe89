"""The nanogpt provider against the fake NanoGPT server over real sockets: sync and async
models, cost, resumability, transcoding and chunking of large recordings."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from stenod.provider import Batch, BatchItem, Cost, Handle, ItemResult, RemoteState, Task, Transcript, Word
from stenod_nanogpt import NanoGptOptions, NanoGptProvider, NanoGptSettings
from support.server import ThreadedServer, serve
from tests.fakes.context import MemoryStepContext, SimulatedCrash
from tests.fakes.nanogpt import FakeNanoGptServer, write_pattern_wav

SPEECH_WITH_PAUSES = [(3.7, True), (0.6, False)] * 10  # 43 s, a pause every 4.3 s


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[FakeNanoGptServer, ThreadedServer]]:
    fake = FakeNanoGptServer()
    with serve(fake.app) as server:
        yield fake, server


@pytest.fixture
def nanogpt(fake: tuple[FakeNanoGptServer, ThreadedServer]) -> FakeNanoGptServer:
    server = fake[0]
    httpx.post(f"{fake[1].url}/__fake__/reset")
    server.state.max_upload_bytes = 3_000_000
    return server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def provider(
    fake: tuple[FakeNanoGptServer, ThreadedServer], http: httpx.AsyncClient, **settings: Any
) -> NanoGptProvider:
    config = NanoGptSettings(api_key=SecretStr("test-nanogpt-key"), base_url=f"{fake[1].url}/api", **settings)
    return NanoGptProvider(config, http)


def batch_of(path: Path, **options: Any) -> Batch:
    st = path.stat()
    item = BatchItem("item-1", path, path.name, st.st_size, device=st.st_dev, inode=st.st_ino)
    return Batch("batch-1", Task.TRANSCRIBE, (item,), "en-US", (), NanoGptOptions(**options))


async def run_to_done(plugin: NanoGptProvider, handle: Handle) -> None:
    for _ in range(20):
        if (await plugin.poll(handle)).state is RemoteState.DONE:
            return
    raise AssertionError("job never finished")


def transcript_of(result: ItemResult) -> Transcript:
    assert result.transcript is not None, result.error
    return result.transcript


def words_of(result: ItemResult) -> tuple[Word, ...]:
    words = transcript_of(result).words
    assert words is not None
    return words


async def test_sync_model_returns_transcript_and_cost_from_submit(fake, nanogpt, http, tmp_path) -> None:
    clip = tmp_path / "clip.wav"
    write_pattern_wav(clip, [(2.0, True)])
    plugin = provider(fake, http)
    handle = await plugin.submit(batch_of(clip), MemoryStepContext())
    status = await plugin.poll(handle)
    [result] = await plugin.fetch(handle)
    assert (status.state, transcript_of(result).text, result.cost) == (
        RemoteState.DONE,
        "fake transcript of clip.wav",
        Cost(0.00005, "USD"),
    )


async def test_small_accepted_file_is_uploaded_unchanged(fake, nanogpt, http, tmp_path) -> None:
    clip = tmp_path / "clip.wav"
    write_pattern_wav(clip, [(1.0, True)])
    await provider(fake, http).submit(batch_of(clip), MemoryStepContext())
    assert [(u["filename"], u["size"], u["language"]) for u in nanogpt.state.uploads] == [
        ("clip.wav", clip.stat().st_size, "en")
    ]


async def test_async_model_checkpoints_run_and_billing_context_before_returning(fake, nanogpt, http, tmp_path) -> None:
    clip = tmp_path / "meeting.wav"
    write_pattern_wav(clip, [(3.0, True)])
    ctx = MemoryStepContext()
    await provider(fake, http).submit(batch_of(clip, model="Elevenlabs-STT", diarize=True), ctx)
    run = ctx.checkpoints[0]["items"][0]["pieces"][0]["run"]
    assert set(run) == {
        "runId",
        "cost",
        "paymentSource",
        "isApiRequest",
        "fileName",
        "fileSize",
        "chargedDuration",
        "diarize",
    }


async def test_async_status_calls_echo_the_saved_billing_context(fake, nanogpt, http, tmp_path) -> None:
    clip = tmp_path / "meeting.wav"
    write_pattern_wav(clip, [(3.0, True)])
    nanogpt.state.polls_until_done = 2
    plugin = provider(fake, http)
    handle = await plugin.submit(batch_of(clip, model="Elevenlabs-STT", diarize=True), MemoryStepContext())
    await run_to_done(plugin, handle)
    saved = handle["items"][0]["pieces"][0]["run"]
    assert nanogpt.state.status_bodies == [saved, saved, saved]


async def test_async_run_reports_running_until_completed(fake, nanogpt, http, tmp_path) -> None:
    clip = tmp_path / "meeting.wav"
    write_pattern_wav(clip, [(3.0, True)])
    nanogpt.state.polls_until_done = 2
    plugin = provider(fake, http)
    handle = await plugin.submit(batch_of(clip, model="Elevenlabs-STT"), MemoryStepContext())
    states = [(await plugin.poll(handle)).state for _ in range(3)]
    assert states == [RemoteState.RUNNING, RemoteState.RUNNING, RemoteState.DONE]


async def test_async_result_has_words_speakers_segments_and_cost(fake, nanogpt, http, tmp_path) -> None:
    clip = tmp_path / "meeting.wav"
    write_pattern_wav(clip, [(10.0, True)])
    plugin = provider(fake, http)
    handle = await plugin.submit(batch_of(clip, model="Elevenlabs-STT", diarize=True), MemoryStepContext())
    await run_to_done(plugin, handle)
    [result] = await plugin.fetch(handle)
    transcript = transcript_of(result)
    words = words_of(result)
    assert (
        [s.speaker for s in transcript.segments],
        words[4].text,
        words[0].speaker,
        result.cost,
        transcript.provider_job_id,
    ) == (["Speaker 1", "Speaker 2"], "w4.", "speaker_0", Cost(0.006, "USD"), "run_000001")


async def test_crash_after_run_checkpoint_resumes_the_same_run(fake, nanogpt, http, tmp_path) -> None:
    clip = tmp_path / "meeting.wav"
    write_pattern_wav(clip, [(3.0, True)])
    plugin = provider(fake, http)
    batch = batch_of(clip, model="Elevenlabs-STT")
    ctx = MemoryStepContext(crash_after_checkpoints=1)
    with pytest.raises(SimulatedCrash):
        await plugin.submit(batch, ctx)
    handle = await provider(fake, http).submit(batch, ctx.resumed())
    await run_to_done(plugin, handle)
    [result] = await plugin.fetch(handle)
    assert (nanogpt.state.counters["transcribe_calls"], transcript_of(result).provider_job_id) == (
        1,
        "run_000001",
    )


async def test_recording_over_the_upload_cap_is_sent_as_compact_mp3(fake, nanogpt, http, tmp_path) -> None:
    recording = tmp_path / "long.wav"
    seconds = write_pattern_wav(recording, SPEECH_WITH_PAUSES)
    assert recording.stat().st_size > 3_000_000
    await provider(fake, http).submit(batch_of(recording), MemoryStepContext())
    [upload] = nanogpt.state.uploads
    assert (upload["filename"], upload["size"] < 3_000_000, upload["seconds"]) == (
        "long.part000.mp3",
        True,
        pytest.approx(seconds, abs=0.1),
    )


async def test_chunked_recording_stitches_into_monotonic_timings_covering_it(fake, nanogpt, http, tmp_path) -> None:
    recording = tmp_path / "long.wav"
    seconds = write_pattern_wav(recording, SPEECH_WITH_PAUSES)
    nanogpt.state.max_upload_bytes = 40_000
    plugin = provider(fake, http, max_upload_bytes=40_000)
    handle = await plugin.submit(batch_of(recording, model="Elevenlabs-STT"), MemoryStepContext())
    await run_to_done(plugin, handle)
    [result] = await plugin.fetch(handle)
    times = [t for w in words_of(result) for t in (w.start, w.end)]
    assert (len(nanogpt.state.uploads) > 3, times == sorted(times)) == (True, True)
    assert transcript_of(result).duration == pytest.approx(seconds, abs=0.01)
    assert times[-1] == pytest.approx(seconds, abs=0.2)


async def test_chunks_are_cut_in_pauses(fake, nanogpt, http, tmp_path) -> None:
    recording = tmp_path / "long.wav"
    write_pattern_wav(recording, SPEECH_WITH_PAUSES)
    nanogpt.state.max_upload_bytes = 40_000
    handle = await provider(fake, http, max_upload_bytes=40_000).submit(batch_of(recording), MemoryStepContext())
    cuts = [p["start"] / 16_000 for p in handle["items"][0]["pieces"][1:]]
    # Pauses span [4.3k - 0.6, 4.3k) seconds.
    assert cuts and all(0 < (cut % 4.3) - 3.7 < 0.6 for cut in cuts), cuts


async def test_sync_chunks_give_one_segment_per_piece_in_order(fake, nanogpt, http, tmp_path) -> None:
    recording = tmp_path / "long.wav"
    seconds = write_pattern_wav(recording, SPEECH_WITH_PAUSES)
    nanogpt.state.max_upload_bytes = 40_000
    plugin = provider(fake, http, max_upload_bytes=40_000)
    handle = await plugin.submit(batch_of(recording), MemoryStepContext())
    [result] = await plugin.fetch(handle)
    segments = transcript_of(result).segments
    contiguous = all(a.end == b.start for a, b in itertools.pairwise(segments))
    assert (segments[0].start, contiguous, len(segments)) == (0.0, True, len(nanogpt.state.uploads))
    assert segments[-1].end == pytest.approx(seconds, abs=0.01)


async def test_chunked_costs_are_summed(fake, nanogpt, http, tmp_path) -> None:
    recording = tmp_path / "long.wav"
    write_pattern_wav(recording, SPEECH_WITH_PAUSES)
    nanogpt.state.max_upload_bytes = 40_000
    plugin = provider(fake, http, max_upload_bytes=40_000)
    handle = await plugin.submit(batch_of(recording, model="Elevenlabs-STT"), MemoryStepContext())
    await run_to_done(plugin, handle)
    [result] = await plugin.fetch(handle)
    expected = sum(run["context"]["cost"] for run in nanogpt.state.stats()["runs"].values())
    assert result.cost is not None and result.cost.currency == "USD"
    assert result.cost.amount == pytest.approx(expected)


@pytest.mark.parametrize("crash_after", [1, 2, 3])
async def test_crash_while_uploading_chunks_never_uploads_a_piece_twice(
    fake, nanogpt, http, tmp_path, crash_after
) -> None:
    recording = tmp_path / "long.wav"
    write_pattern_wav(recording, SPEECH_WITH_PAUSES)
    nanogpt.state.max_upload_bytes = 40_000
    batch = batch_of(recording, model="Elevenlabs-STT")
    ctx = MemoryStepContext(crash_after_checkpoints=crash_after)
    with pytest.raises(SimulatedCrash):
        await provider(fake, http, max_upload_bytes=40_000).submit(batch, ctx)
    handle = await provider(fake, http, max_upload_bytes=40_000).submit(batch, ctx.resumed())
    pieces = handle["items"][0]["pieces"]
    run_ids = [p["run"]["runId"] for p in pieces]
    assert (nanogpt.state.counters["transcribe_calls"], len(set(run_ids))) == (len(pieces), len(pieces))


async def test_options_reach_the_wire_as_documented_form_fields(fake, nanogpt, http, tmp_path) -> None:
    clip = tmp_path / "clip.wav"
    write_pattern_wav(clip, [(2.0, True)])
    options = {"model": "Elevenlabs-STT", "diarize": True, "tag_audio_events": True}
    plugin = provider(fake, http)
    handle = await plugin.submit(batch_of(clip, **options), MemoryStepContext())
    await run_to_done(plugin, handle)
    [result] = await plugin.fetch(handle)
    [upload] = nanogpt.state.uploads
    assert (
        upload["diarize"],
        upload["tagAudioEvents"],
        upload["actualDuration"],
        words_of(result)[0].text,
    ) == (
        True,
        True,
        "0.0333",
        "(laughter)",
    )


@pytest.mark.slow
async def test_seventeen_minute_recording_is_split_under_the_real_three_megabyte_cap(
    fake, nanogpt, http, tmp_path
) -> None:
    recording = tmp_path / "lecture.wav"
    seconds = write_pattern_wav(recording, [(8.0, True), (1.0, False)] * 115, rate=16_000)
    plugin = provider(fake, http)
    handle = await plugin.submit(batch_of(recording, model="Elevenlabs-STT"), MemoryStepContext())
    await run_to_done(plugin, handle)
    [result] = await plugin.fetch(handle)
    times = [t for w in words_of(result) for t in (w.start, w.end)]
    uploads = nanogpt.state.uploads
    assert (len(uploads), max(u["size"] for u in uploads) <= 3_000_000, times == sorted(times)) == (2, True, True)
    assert sum(u["seconds"] for u in uploads) == pytest.approx(seconds, abs=0.2)
    assert times[-1] == pytest.approx(seconds, abs=0.2)
