"""The official ``sarvamai`` SDK runs its whole batch-job flow against the fake Sarvam server.

This is the proof that the fake speaks Sarvam's real protocol (paths, auth header, body
shapes, presigned blob upload and download): the SDK parses every answer with its own
generated models and fails on anything it does not expect.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sarvamai import AsyncSarvamAI, SarvamAI
from sarvamai.core.api_error import ApiError
from sarvamai.environment import SarvamAIEnvironment

from support.server import ThreadedServer, serve
from tests.fakes.sarvam import FakeSarvam, SarvamFakeConfig

KEY = "sdk-test-key"


@pytest.fixture
def server() -> Iterator[ThreadedServer]:
    with serve(FakeSarvam(SarvamFakeConfig(api_key=KEY)).app) as running:
        yield running


def environment(server: ThreadedServer) -> SarvamAIEnvironment:
    return SarvamAIEnvironment(base=server.url, creative=server.url, production=server.url)


def audio(folder: Path, *names: str) -> list[str]:
    paths = []
    for index, name in enumerate(names):
        path = folder / name
        path.write_bytes(b"RIFF" + bytes(100 + index))
        paths.append(str(path))
    return paths


def test_sdk_speech_to_text_job_runs_end_to_end(server: ThreadedServer, tmp_path: Path) -> None:
    client = SarvamAI(api_subscription_key=KEY, environment=environment(server))
    job = client.speech_to_text_job.create_job(
        model="saaras:v3", language_code="hi-IN", with_timestamps=True, with_diarization=True, num_speakers=2
    )
    assert job.upload_files(audio(tmp_path, "one.wav", "two.mp3"))
    assert job.start().job_state == "Pending"
    final = job.wait_until_complete(poll_interval=0, timeout=30)
    assert final.job_state == "Completed" and final.successful_files_count == 2
    out = tmp_path / "out"
    assert job.download_outputs(str(out))
    result = json.loads((out / "one.wav.json").read_text())
    assert result["transcript"].startswith("Sentence 1 of one")
    assert len(result["timestamps"]["words"]) == len(result["timestamps"]["start_time_seconds"]) >= 2
    assert {e["speaker_id"] for e in result["diarized_transcript"]["entries"]} == {"0", "1"}
    assert (out / "two.mp3.json").exists()


def test_sdk_reports_failed_files_per_file(server: ThreadedServer, tmp_path: Path) -> None:
    import httpx

    httpx.post(f"{server.url}/__fake__/faults", json={"fail_files": ["bad*"]}).raise_for_status()
    client = SarvamAI(api_subscription_key=KEY, environment=environment(server))
    job = client.speech_to_text_job.create_job(model="saaras:v3")
    job.upload_files(audio(tmp_path, "good.wav", "bad.wav"))
    job.start()
    job.wait_until_complete(poll_interval=0, timeout=30)
    results = job.get_file_results()
    assert [f["file_name"] for f in results["successful"]] == ["good.wav"]
    assert [f["file_name"] for f in results["failed"]] == ["bad.wav"]


def test_sdk_speech_to_text_translate_job_runs_end_to_end(server: ThreadedServer, tmp_path: Path) -> None:
    client = SarvamAI(api_subscription_key=KEY, environment=environment(server))
    job = client.speech_to_text_translate_job.create_job(prompt="a meeting", with_diarization=True)
    job.upload_files(audio(tmp_path, "call.wav"))
    job.start()
    assert job.wait_until_complete(poll_interval=0, timeout=30).job_state == "Completed"
    out = tmp_path / "out"
    job.download_outputs(str(out))
    result = json.loads((out / "call.wav.json").read_text())
    assert result["transcript"].startswith("Translated sentence 1 of call")
    assert "timestamps" not in result


async def test_async_sdk_job_runs_end_to_end(server: ThreadedServer, tmp_path: Path) -> None:
    client = AsyncSarvamAI(api_subscription_key=KEY, environment=environment(server))
    job = await client.speech_to_text_job.create_job(model="saaras:v3", language_code="unknown")
    await job.upload_files(audio(tmp_path, "a.ogg"))
    await job.start()
    assert (await job.wait_until_complete(poll_interval=0, timeout=30)).job_state == "Completed"
    out = tmp_path / "out"
    await job.download_outputs(str(out))
    assert json.loads((out / "a.ogg.json").read_text())["language_code"] == "hi-IN"


def test_sdk_sees_the_documented_403_for_a_wrong_key(server: ThreadedServer) -> None:
    client = SarvamAI(api_subscription_key="wrong", environment=environment(server))
    with pytest.raises(ApiError) as info:
        client.speech_to_text_job.create_job(model="saaras:v3")
    assert info.value.status_code == 403
    assert info.value.body["error"]["code"] == "invalid_api_key_error"
