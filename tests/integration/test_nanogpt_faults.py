"""Every NanoGPT fault ends in the right error class with a message a person can act on."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from stenod.provider import AuthError, Batch, BatchItem, PermanentError, RemoteState, RetryableError, Task
from stenod_nanogpt import NanoGptOptions, NanoGptProvider, NanoGptSettings
from support.server import ThreadedServer, serve
from tests.fakes.context import MemoryStepContext
from tests.fakes.nanogpt import FakeNanoGptServer, write_pattern_wav


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[FakeNanoGptServer, ThreadedServer]]:
    fake = FakeNanoGptServer()
    with serve(fake.app) as server:
        yield fake, server


@pytest.fixture
def url(fake: tuple[FakeNanoGptServer, ThreadedServer]) -> str:
    httpx.post(f"{fake[1].url}/__fake__/reset")
    fake[0].state.max_upload_bytes = 3_000_000
    return fake[1].url


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    path = tmp_path / "clip.wav"
    write_pattern_wav(path, [(1.0, True)])
    return path


def plugin(url: str, http: httpx.AsyncClient, key: str = "test-nanogpt-key", **settings: Any) -> NanoGptProvider:
    return NanoGptProvider(NanoGptSettings(api_key=SecretStr(key), base_url=f"{url}/api", **settings), http)


def batch_of(path: Path, model: str = "Whisper-Large-V3") -> Batch:
    st = path.stat()
    item = BatchItem("item-1", path, path.name, st.st_size, device=st.st_dev, inode=st.st_ino)
    return Batch("batch-1", Task.TRANSCRIBE, (item,), None, (), NanoGptOptions(model=model))


def load(url: str, *rules: dict[str, Any]) -> None:
    httpx.post(f"{url}/__fake__/faults", json=list(rules)).raise_for_status()


async def test_wrong_api_key_is_an_auth_error_naming_the_setting(url, http, clip) -> None:
    with pytest.raises(AuthError, match=r"providers\.nanogpt\] api_key"):
        await plugin(url, http, key="wrong").submit(batch_of(clip), MemoryStepContext())


@pytest.mark.parametrize(
    ("rule", "error", "code", "text"),
    [
        (
            {"status": 402, "shape": "string", "message": "Insufficient balance"},
            PermanentError,
            "insufficient_balance",
            "top up",
        ),
        ({"status": 413, "message": "File too large"}, PermanentError, "too_large", "File too large"),
        ({"status": 400, "message": "Invalid language"}, PermanentError, "http_400", "Invalid language"),
        (
            {
                "status": 429,
                "shape": "object",
                "code": "daily_rpd_limit_exceeded",
                "message": "daily cap",
                "retry_after": 7,
            },
            RetryableError,
            "daily_rpd_limit_exceeded",
            "daily cap",
        ),
        ({"status": 500, "message": "upstream exploded"}, RetryableError, "http_500", "upstream exploded"),
        ({"malformed": True}, RetryableError, "malformed_response", "malformed"),
        ({"reset": True}, RetryableError, "network", "unreachable"),
    ],
    ids=["402-balance", "413-too-large", "400-invalid", "429-rate-limit", "500", "malformed-json", "reset"],
)
async def test_transcribe_fault_maps_to_error_class(url, http, clip, rule, error, code, text) -> None:
    load(url, {"route": "transcribe", **rule})
    with pytest.raises(error, match=text) as info:
        await plugin(url, http).submit(batch_of(clip), MemoryStepContext())
    assert (type(info.value), info.value.code) == (error, code)


async def test_rate_limit_carries_retry_after(url, http, clip) -> None:
    load(url, {"route": "transcribe", "status": 429, "retry_after": 7})
    with pytest.raises(RetryableError) as info:
        await plugin(url, http).submit(batch_of(clip), MemoryStepContext())
    assert info.value.retry_after == 7.0


async def test_slow_answer_is_a_retryable_timeout(url, http, clip) -> None:
    load(url, {"route": "transcribe", "delay": 2.0})
    with pytest.raises(RetryableError) as info:
        await plugin(url, http, request_timeout_seconds=0.3).submit(batch_of(clip), MemoryStepContext())
    assert info.value.code == "timeout"


async def test_upload_larger_than_the_service_accepts_is_permanent(url, http, fake, clip) -> None:
    fake[0].state.max_upload_bytes = 10_000
    with pytest.raises(PermanentError) as info:
        await plugin(url, http).submit(batch_of(clip), MemoryStepContext())
    assert info.value.code == "too_large"


async def test_undecodable_recording_fails_before_any_upload(url, http, fake, tmp_path) -> None:
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF but not really audio" * 100)
    with pytest.raises(PermanentError) as info:
        await plugin(url, http).submit(batch_of(junk), MemoryStepContext())
    assert (info.value.code, fake[0].state.counters.get("transcribe_calls", 0)) == ("undecodable_audio", 0)


@pytest.mark.parametrize(
    ("rule", "error", "code"),
    [
        ({"status": 503, "retry_after": 3}, RetryableError, "http_503"),
        ({"status": 401}, AuthError, "auth"),
        ({"malformed": True}, RetryableError, "malformed_response"),
    ],
    ids=["503", "401", "malformed-json"],
)
async def test_status_fault_maps_to_error_class(url, http, clip, rule, error, code) -> None:
    nanogpt = plugin(url, http)
    handle = await nanogpt.submit(batch_of(clip, "Elevenlabs-STT"), MemoryStepContext())
    load(url, {"route": "status", **rule})
    with pytest.raises(error) as info:
        await nanogpt.poll(handle)
    assert info.value.code == code


async def test_unknown_run_is_permanent(url, http) -> None:
    piece = {"start": 0, "length": 16000, "run": {"runId": "run_gone"}}
    handle = {"items": [{"item_id": "i", "name": "x.wav", "pieces": [piece]}]}
    with pytest.raises(PermanentError) as info:
        await plugin(url, http).poll(handle)
    assert info.value.code == "unknown_run"


async def test_failed_run_fails_its_item_with_the_reason(url, http, fake, clip) -> None:
    fake[0].state.fail_runs.append("audio too noisy")
    nanogpt = plugin(url, http)
    handle = await nanogpt.submit(batch_of(clip, "Elevenlabs-STT"), MemoryStepContext())
    status = await nanogpt.poll(handle)
    for _ in range(5):
        if status.state is not RemoteState.RUNNING:
            break
        status = await nanogpt.poll(handle)
    [result] = await nanogpt.fetch(handle)
    assert result.error is not None
    assert (status.state, status.items[0].state, result.transcript, result.error.message) == (
        RemoteState.DONE,
        RemoteState.FAILED,
        None,
        "nanogpt could not transcribe clip.wav: audio too noisy",
    )


async def test_missing_api_key_is_an_auth_error(url, http, clip) -> None:
    nanogpt = NanoGptProvider(NanoGptSettings(base_url=f"{url}/api"), http)
    with pytest.raises(AuthError):
        await nanogpt.submit(batch_of(clip), MemoryStepContext())
