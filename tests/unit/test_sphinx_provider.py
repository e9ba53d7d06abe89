"""The sphinx provider end to end: real worker processes, real files, synthesised speech.

Word error rates measured here (espeak-ng voice en-us+f2, SENTENCES[3:5], the en-us
model in the pocketsphinx 5.1.1 wheel, PyAV 18): 0.05 in every format at 16 and
22.05 kHz. The bound leaves room for other libav/PocketSphinx builds without accepting
gibberish (the default espeak voice, without the first-utterance priming, scored 0.4–0.9).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import jiwer
import psutil
import pytest

from stenod.provider import (
    Batch,
    BatchItem,
    NoOptions,
    PermanentError,
    RemoteState,
    RetryableError,
    Task,
    Transcript,
)
from stenod_sphinx import SphinxProvider, SphinxSettings
from tests.fakes.context import MemoryStepContext
from tests.speech import FORMATS, SENTENCES, long_speech, synthesise_sentences

MAX_WER = 0.25
SPOKEN = SENTENCES[3:5]

TranscriptOf = Callable[[str], Awaitable[Transcript]]


def item_for(path: Path, item_id: str = "item-1") -> BatchItem:
    st = os.stat(path)
    return BatchItem(item_id, path, path.name, st.st_size, device=st.st_dev, inode=st.st_ino)


def batch_of(*items: BatchItem, task: Task = Task.TRANSCRIBE) -> Batch:
    return Batch("batch-1", task, items, "en-US", (), NoOptions())


async def transcribe(provider: SphinxProvider, path: Path) -> Transcript:
    handle = await provider.submit(batch_of(item_for(path)), MemoryStepContext())
    (result,) = await provider.fetch(json.loads(json.dumps(handle)))
    assert result.transcript is not None
    return result.transcript


async def failure(provider: SphinxProvider, item: BatchItem) -> PermanentError:
    with pytest.raises(PermanentError) as info:
        await provider.submit(batch_of(item), MemoryStepContext())
    return info.value


@pytest.fixture(scope="module")
def provider() -> Iterator[SphinxProvider]:
    """One worker shared by the module's ordinary tests (spawning loads the model)."""
    shared = SphinxProvider(SphinxSettings(workers=1))
    yield shared
    asyncio.run(shared.aclose())


@pytest.fixture
async def own_provider() -> AsyncIterator[SphinxProvider]:
    """A provider of its own, for tests that kill or stop its workers."""
    fresh = SphinxProvider(SphinxSettings(workers=1))
    yield fresh
    await fresh.aclose()


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("sphinx")
    return {fmt: synthesise_sentences(SPOKEN, folder / f"speech.{fmt}") for fmt in FORMATS}


@pytest.fixture(scope="module")
def short(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few seconds of speech, for tests about processes rather than recognition."""
    return synthesise_sentences(SENTENCES[1:2], tmp_path_factory.mktemp("short") / "short.wav")


@pytest.fixture(scope="module")
def transcripts() -> dict[str, Transcript]:
    """Transcripts of ``speech`` already made, by format: recognition is the slow part."""
    return {}


@pytest.fixture
async def transcript_of(
    provider: SphinxProvider, speech: dict[str, Path], transcripts: dict[str, Transcript]
) -> Callable[[str], Awaitable[Transcript]]:
    async def get(fmt: str) -> Transcript:
        if fmt not in transcripts:
            transcripts[fmt] = await transcribe(provider, speech[fmt])
        return transcripts[fmt]

    return get


@pytest.fixture(scope="module")
def long_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path, _ = long_speech(tmp_path_factory.mktemp("long") / "long.flac", 30)
    return path


async def captured(job: Awaitable[object]) -> object:
    """The job's result or the exception it raised (so a TaskGroup does not re-raise it)."""
    try:
        return await job
    except Exception as exc:
        return exc


class SignallingContext(MemoryStepContext):
    """Sets ``reported`` at the first progress report (the worker is mid-file)."""

    def __init__(self) -> None:
        super().__init__()
        self.reported = asyncio.Event()

    def progress(self, fraction: float) -> None:
        super().progress(fraction)
        if fraction < 1.0:
            self.reported.set()


# --- recognition -----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
async def test_speech_is_recognised_in_every_format(transcript_of: TranscriptOf, fmt: str) -> None:
    transcript = await transcript_of(fmt)
    assert jiwer.wer(" ".join(SPOKEN), transcript.text.replace("\n", " ")) < MAX_WER


async def test_a_22050_hz_recording_is_recognised(provider: SphinxProvider, tmp_path: Path) -> None:
    path = synthesise_sentences(SPOKEN, tmp_path / "speech.mp3", rate=22050)
    transcript = await transcribe(provider, path)
    assert jiwer.wer(" ".join(SPOKEN), transcript.text.replace("\n", " ")) < MAX_WER


async def test_transcript_is_labelled_us_english_from_sphinx(transcript_of: TranscriptOf) -> None:
    transcript = await transcript_of("wav")
    assert (transcript.language, transcript.provider) == ("en-US", "sphinx")


async def test_segments_are_in_order_and_within_the_duration(transcript_of: TranscriptOf) -> None:
    transcript = await transcript_of("ogg")
    times = [t for s in transcript.segments for t in (s.start, s.end)]
    assert times == sorted(times) and times[0] >= 0 and times[-1] <= transcript.duration  # type: ignore[operator]


async def test_one_segment_per_spoken_sentence(transcript_of: TranscriptOf) -> None:
    transcript = await transcript_of("flac")
    assert len(transcript.segments) == len(SPOKEN)


async def test_words_are_timed_plain_words(transcript_of: TranscriptOf) -> None:
    transcript = await transcript_of("webm")
    assert transcript.words and all(
        w.text.isascii() and "(" not in w.text and "<" not in w.text and w.start <= w.end for w in transcript.words
    )


async def test_progress_reports_rise_to_one(provider: SphinxProvider, long_file: Path) -> None:
    ctx = MemoryStepContext()
    await provider.submit(batch_of(item_for(long_file)), ctx)
    reports = ctx.progress_reports
    assert reports == sorted(reports) and reports[-1] == 1.0 and len(reports) >= 3


async def test_a_finished_job_polls_as_done(provider: SphinxProvider, short: Path) -> None:
    handle = await provider.submit(batch_of(item_for(short)), MemoryStepContext())
    assert (await provider.poll(handle)).state is RemoteState.DONE


async def test_a_truncated_recording_is_transcribed_up_to_the_cut(
    provider: SphinxProvider, speech: dict[str, Path], tmp_path: Path
) -> None:
    data = speech["flac"].read_bytes()
    path = tmp_path / "cut.flac"
    path.write_bytes(data[: len(data) * 6 // 10])  # the first sentence and a bit
    transcript = await transcribe(provider, path)
    assert jiwer.wer(SPOKEN[0], transcript.segments[0].text) < MAX_WER


async def test_in_a_batch_of_several_files_a_bad_one_fails_alone(
    provider: SphinxProvider, short: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "empty.wav"
    empty.touch()
    handle = await provider.submit(batch_of(item_for(short, "good"), item_for(empty, "bad")), MemoryStepContext())
    good, bad = await provider.fetch(handle)
    assert (good.transcript is not None, bad.error.code if bad.error else None) == (True, "empty_file")


# --- files that cannot be transcribed -----------------------------------------------------


async def test_a_zero_byte_file_fails_as_empty(provider: SphinxProvider, tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.touch()
    error = await failure(provider, item_for(path))
    assert (error.code, str(path) in error.message) == ("empty_file", True)


async def test_random_bytes_named_wav_fail_as_not_audio(provider: SphinxProvider, tmp_path: Path) -> None:
    path = tmp_path / "static.wav"
    path.write_bytes(random.Random(7).randbytes(50_000))
    error = await failure(provider, item_for(path))
    assert (error.code, f"{path} is not a recognisable audio file" in error.message) == ("not_audio", True)


async def test_a_text_file_named_mp3_fails_as_not_audio(provider: SphinxProvider, tmp_path: Path) -> None:
    path = tmp_path / "lyrics.mp3"
    path.write_text("la la la, la la la\n" * 100)
    error = await failure(provider, item_for(path))
    assert (error.code, str(path) in error.message) == ("not_audio", True)


async def test_a_file_cut_before_any_audio_fails_as_corrupt(
    provider: SphinxProvider, speech: dict[str, Path], tmp_path: Path
) -> None:
    path = tmp_path / "stub.flac"
    path.write_bytes(speech["flac"].read_bytes()[:1000])
    error = await failure(provider, item_for(path))
    assert (error.code, str(path) in error.message) == ("corrupt_audio", True)


async def test_a_file_deleted_before_submit_fails_as_missing(
    provider: SphinxProvider, speech: dict[str, Path], tmp_path: Path
) -> None:
    path = tmp_path / "gone.wav"
    path.write_bytes(speech["wav"].read_bytes())
    item = item_for(path)
    path.unlink()
    error = await failure(provider, item)
    assert (error.code, str(path) in error.message) == ("input_missing", True)


async def test_a_file_replaced_after_acceptance_is_refused(
    provider: SphinxProvider, speech: dict[str, Path], tmp_path: Path
) -> None:
    path = tmp_path / "swapped.wav"
    path.write_bytes(speech["wav"].read_bytes())
    item = item_for(path)
    replacement = tmp_path / "other.wav"
    replacement.write_bytes(speech["wav"].read_bytes())  # same size, another inode
    replacement.replace(path)
    error = await failure(provider, item)
    assert (error.code, str(path) in error.message) == ("input_changed", True)


async def test_a_file_replaced_by_a_symlink_is_not_followed(
    provider: SphinxProvider, speech: dict[str, Path], tmp_path: Path
) -> None:
    path = tmp_path / "linked.wav"
    path.write_bytes(speech["wav"].read_bytes())
    item = item_for(path)
    path.unlink()
    path.symlink_to(speech["wav"])
    error = await failure(provider, item)
    assert (error.code, str(path) in error.message) == ("input_unreadable", True)


async def test_translation_is_refused(provider: SphinxProvider, short: Path) -> None:
    with pytest.raises(PermanentError) as info:
        await provider.submit(batch_of(item_for(short), task=Task.TRANSLATE), MemoryStepContext())
    assert info.value.code == "unsupported_task"


# --- worker processes ----------------------------------------------------------------


async def test_a_killed_worker_is_retryable_and_the_next_file_works(
    own_provider: SphinxProvider, long_file: Path, short: Path
) -> None:
    ctx = SignallingContext()
    async with asyncio.TaskGroup() as tg:
        job = tg.create_task(captured(own_provider.submit(batch_of(item_for(long_file)), ctx)), name="job")
        await ctx.reported.wait()
        (pid,) = own_provider.worker_pids()
        os.kill(pid, signal.SIGKILL)
    error = job.result()
    assert isinstance(error, RetryableError) and error.code == "worker_crashed"
    assert (await transcribe(own_provider, short)).text


async def test_two_files_at_once_run_on_two_workers(short: Path) -> None:
    async with SphinxProvider(SphinxSettings(workers=2)) as pair:
        first, second = await asyncio.gather(transcribe(pair, short), transcribe(pair, short))
        assert (first.text == second.text != "", len(pair.worker_pids())) == (True, 2)


async def test_a_worker_over_its_time_budget_is_stopped(short: Path) -> None:
    # A budget no recognition can meet: the watchdog fires as soon as the file starts.
    settings = SphinxSettings(workers=1, timeout_factor=0.0001, timeout_grace_seconds=0.001)
    async with SphinxProvider(settings) as impatient:
        with pytest.raises(RetryableError) as info:
            await impatient.submit(batch_of(item_for(short)), MemoryStepContext())
        assert (info.value.code, impatient.worker_pids()) == ("worker_timeout", [])


async def test_a_cancelled_job_leaves_its_worker_alive_and_usable(
    own_provider: SphinxProvider, long_file: Path, short: Path
) -> None:
    ctx = SignallingContext()
    async with asyncio.TaskGroup() as tg:
        job = tg.create_task(own_provider.submit(batch_of(item_for(long_file)), ctx), name="long-job")
        await ctx.reported.wait()
        (pid,) = own_provider.worker_pids()
        job.cancel()
    await transcribe(own_provider, short)
    assert own_provider.worker_pids() == [pid]


async def test_no_worker_process_is_left_after_aclose(own_provider: SphinxProvider, short: Path) -> None:
    await transcribe(own_provider, short)
    pids = own_provider.worker_pids()
    await own_provider.aclose()
    await own_provider.aclose()  # idempotent
    children = {p.pid for p in psutil.Process().children(recursive=True)}
    assert pids and not children & set(pids)


async def test_a_closed_provider_refuses_new_work(own_provider: SphinxProvider, short: Path) -> None:
    await own_provider.aclose()
    with pytest.raises(RetryableError):
        await own_provider.submit(batch_of(item_for(short)), MemoryStepContext())


async def test_workers_do_not_inherit_the_daemons_database(
    own_provider: SphinxProvider, short: Path, tmp_path: Path
) -> None:
    database = tmp_path / "journal.db"
    connection = sqlite3.connect(database)
    try:
        connection.execute("CREATE TABLE jobs (id INTEGER)")
        await transcribe(own_provider, short)
        (pid,) = own_provider.worker_pids()
        targets = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    finally:
        connection.close()
    assert not any(t.startswith(str(database)) for t in targets)


# --- settings ------------------------------------------------------------------------


def test_concurrent_jobs_default_to_one_per_worker() -> None:
    assert SphinxSettings(workers=3).max_concurrent_jobs == 3


def test_concurrent_jobs_can_be_set_explicitly() -> None:
    assert SphinxSettings(workers=3, max_concurrent_jobs=1).max_concurrent_jobs == 1


def test_options_reject_unknown_keys() -> None:
    with pytest.raises(ValueError):
        SphinxProvider.Options.model_validate({"model": "large"})


_DAEMON_SCRIPT = """
import asyncio, os, sys
from pathlib import Path
from stenod.provider import Batch, BatchItem, NoOptions, Task
from stenod_sphinx import SphinxProvider, SphinxSettings
from tests.fakes.context import MemoryStepContext

async def main() -> None:
    path = Path(sys.argv[1])
    st = path.stat()
    item = BatchItem("a", path, path.name, st.st_size, device=st.st_dev, inode=st.st_ino)
    provider = SphinxProvider(SphinxSettings(workers=1))
    await provider.submit(Batch("b", Task.TRANSCRIBE, (item,), None, (), NoOptions()), MemoryStepContext())
    print(provider.worker_pids()[0], flush=True)
    await asyncio.sleep(600)

if __name__ == "__main__":
    asyncio.run(main())
"""


def gone(pid: int, *, within: float) -> bool:
    """Whether the process exits (or is left a zombie for init to reap) within ``within`` s."""
    try:
        process = psutil.Process(pid)
        process.wait(timeout=within)
    except psutil.NoSuchProcess:
        return True
    except psutil.TimeoutExpired:
        return process.status() == psutil.STATUS_ZOMBIE
    return True


def test_workers_exit_when_the_daemon_is_killed(short: Path, tmp_path: Path) -> None:
    script = tmp_path / "daemon.py"
    script.write_text(_DAEMON_SCRIPT)
    root = Path(__file__).resolve().parents[2]  # so the script finds tests.fakes
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    daemon = subprocess.Popen([sys.executable, str(script), str(short)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert daemon.stdout is not None
        worker_pid = int(daemon.stdout.readline())
    finally:
        daemon.kill()
        daemon.wait()
    assert gone(worker_pid, within=30)
