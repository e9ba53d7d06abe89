"""Voice commands on the whisper provider: the reserved live worker, in memory, beside the
batch workers (real processes, the bundled model, Festival's voice)."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest
import pytest_asyncio

from stenod.provider import Batch, BatchItem, LiveAudio, LiveTranscriber, PermanentError, Segment, StartContext, Task
from stenod_whisper import WhisperOptions, WhisperProvider, WhisperSettings
from support.speech import festival_pcm, synthesise
from tests.fakes.context import MemoryStepContext

pytestmark = pytest.mark.asyncio(loop_scope="module")

COMMAND = "turn on the kitchen light"


def words(text: str) -> str:
    return " ".join(re.findall(r"[a-z]+", text.lower()))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def provider(whisper_models: Path) -> AsyncIterator[WhisperProvider]:
    """One batch worker and the live worker, started as the daemon starts them."""
    started = WhisperProvider(WhisperSettings(model_dir=whisper_models, workers=1))
    await started.start(StartContext(state_dir=whisper_models.parent))
    await started.start_live()
    yield started
    await started.aclose()


async def test_the_provider_is_a_live_transcriber(provider: WhisperProvider) -> None:
    assert isinstance(provider, LiveTranscriber)


async def test_a_command_in_memory_comes_back_with_its_segments(provider: WhisperProvider) -> None:
    pieces: list[Segment] = []
    transcript = await provider.transcribe_live(LiveAudio(festival_pcm(COMMAND), "en"), pieces.append)
    assert words(transcript.text) == COMMAND and transcript.provider == "whisper"
    assert words(" ".join(p.text for p in pieces)) == COMMAND


async def test_the_language_is_detected_when_the_command_names_none(provider: WhisperProvider) -> None:
    transcript = await provider.transcribe_live(LiveAudio(festival_pcm(COMMAND)))
    assert transcript.language == "en" and words(transcript.text) == COMMAND


async def test_an_unknown_language_is_refused_before_any_work(provider: WhisperProvider) -> None:
    with pytest.raises(PermanentError, match="tlh"):
        await provider.transcribe_live(LiveAudio(bytes(32000), "tlh"))


async def test_batch_workers_run_below_the_live_worker(provider: WhisperProvider, tmp_path: Path) -> None:
    path = synthesise("the children are playing in the garden", tmp_path / "file.wav")
    st = os.stat(path)
    item = BatchItem("item-1", path, path.name, st.st_size, device=st.st_dev, inode=st.st_ino)
    await provider.submit(Batch("b-1", Task.TRANSCRIBE, (item,), "en", (), WhisperOptions()), MemoryStepContext())
    [live] = provider.live_worker_pids()
    batch = provider.worker_pids()
    assert batch and live not in batch
    assert psutil.Process(live).nice() == 0 and all(psutil.Process(pid).nice() == 10 for pid in batch)


async def test_two_live_workers_are_warmed_at_start_and_answer_commands_at_once(whisper_models: Path) -> None:
    two = WhisperProvider(WhisperSettings(model_dir=whisper_models, workers=1))
    await two.start(StartContext(state_dir=whisper_models.parent))
    try:
        await two.start_live(workers=2)
        pids = two.live_worker_pids()
        phrases = [COMMAND, "open the garage door"]
        heard = await asyncio.gather(*(two.transcribe_live(LiveAudio(festival_pcm(p), "en")) for p in phrases))
        assert len(pids) == 2 and two.live_worker_pids() == pids  # warmed both at start, none replaced
        assert [words(t.text) for t in heard] == phrases
    finally:
        await two.aclose()
