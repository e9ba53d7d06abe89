"""The whisper provider end to end: real worker processes, the bundled model, real files,
synthesised speech.

Word error rates measured here (espeak-ng ``en-us+f2`` and Festival ``kal``, Whisper base
int8, PyAV 18): 0.0–0.1 in every format at 16 and 22.05 kHz. The bound leaves room for
other builds without accepting gibberish.
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
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import jiwer
import psutil
import pytest
import pytest_asyncio

from stenod.formats import CUE_CHARS, cues
from stenod.provider import (
    Batch,
    BatchItem,
    PermanentError,
    RemoteState,
    RetryableError,
    StartContext,
    Task,
    Transcript,
)
from stenod_whisper import WhisperOptions, WhisperProvider, WhisperSettings
from support.speech import FORMATS, ITALIAN, SENTENCES, festival_speech, long_speech, synthesise_sentences
from tests.fakes.context import MemoryStepContext

# One event loop for the module: the shared provider's workers report to a socket served in it.
pytestmark = pytest.mark.asyncio(loop_scope="module")

ROOT = Path(__file__).resolve().parents[2]  # so a script run from here finds tests.fakes
MAX_WER = 0.25
SPOKEN = SENTENCES[3:5]
_DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_NUMBERS = {10: "ten", 11: "eleven", 12: "twelve"}

TranscriptOf = Callable[[str], Awaitable[Transcript]]


def words(text: str) -> str:
    """Lower case, no punctuation, numbers spelled as the test sentences speak them (Whisper
    writes "5551234" and "10 o'clock" for "five five five one two three four", "ten")."""
    clean = "".join(ch if ch.isalnum() or ch.isspace() or ch == "'" else " " for ch in text.lower())
    return " ".join(_spelled(w) for w in clean.split())


def _spelled(word: str) -> str:
    if not word.isdigit():
        return word
    if int(word) in _NUMBERS:
        return _NUMBERS[int(word)]
    return " ".join(_DIGITS[int(d)] for d in word)


def wer(reference: str, hypothesis: str) -> float:
    return float(jiwer.wer(words(reference), words(hypothesis)))


def item_for(path: Path, item_id: str = "item-1") -> BatchItem:
    st = os.stat(path)
    return BatchItem(item_id, path, path.name, st.st_size, device=st.st_dev, inode=st.st_ino)


def batch_of(
    *items: BatchItem,
    task: Task = Task.TRANSCRIBE,
    language: str | None = "en-US",
    targets: tuple[str, ...] = (),
    **options: Any,
) -> Batch:
    return Batch("batch-1", task, items, language, targets, WhisperOptions(**options))


async def transcribe(provider: WhisperProvider, path: Path, *, item_id: str = "item-1", **kwargs: Any) -> Transcript:
    handle = await provider.submit(batch_of(item_for(path, item_id), **kwargs), MemoryStepContext())
    (result,) = await provider.fetch(json.loads(json.dumps(handle)))
    assert result.transcript is not None
    return result.transcript


async def failure(provider: WhisperProvider, item: BatchItem, **kwargs: Any) -> PermanentError:
    with pytest.raises(PermanentError) as info:
        await provider.submit(batch_of(item, **kwargs), MemoryStepContext())
    return info.value


async def started(whisper_models: Path, **settings: Any) -> WhisperProvider:
    provider = WhisperProvider(WhisperSettings(model_dir=whisper_models, **{"workers": 1, **settings}))
    await provider.start(StartContext(state_dir=whisper_models.parent))
    return provider


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def provider(whisper_models: Path) -> AsyncIterator[WhisperProvider]:
    """One worker shared by the module's ordinary tests (starting one loads the model)."""
    async with await started(whisper_models) as shared:
        yield shared


@pytest_asyncio.fixture(loop_scope="module")
async def own_provider(whisper_models: Path) -> AsyncIterator[WhisperProvider]:
    """A provider of its own, for tests that kill or stop its workers."""
    fresh = await started(whisper_models)
    yield fresh
    await fresh.aclose()


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("whisper")
    return {fmt: synthesise_sentences(SPOKEN, folder / f"speech.{fmt}") for fmt in FORMATS}


@pytest.fixture(scope="module")
def short(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few seconds of speech, for tests about processes rather than recognition."""
    return synthesise_sentences(SENTENCES[1:2], tmp_path_factory.mktemp("short") / "short.wav")


@pytest.fixture(scope="module")
def italian(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return festival_speech(ITALIAN, tmp_path_factory.mktemp("italian") / "italiano.wav", voice="italian")


@pytest.fixture(scope="module")
def transcripts() -> dict[str, Transcript]:
    """Transcripts of ``speech`` already made, by format: recognition is the slow part."""
    return {}


@pytest_asyncio.fixture(loop_scope="module")
async def transcript_of(
    provider: WhisperProvider, speech: dict[str, Path], transcripts: dict[str, Transcript]
) -> Callable[[str], Awaitable[Transcript]]:
    async def get(fmt: str) -> Transcript:
        if fmt not in transcripts:
            transcripts[fmt] = await transcribe(provider, speech[fmt])
        return transcripts[fmt]

    return get


@pytest.fixture(scope="module")
def long_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path, _ = long_speech(tmp_path_factory.mktemp("long") / "long.flac", 75)
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
    assert wer(" ".join(SPOKEN), transcript.text) < MAX_WER


async def test_a_22050_hz_recording_is_recognised(provider: WhisperProvider, tmp_path: Path) -> None:
    path = synthesise_sentences(SPOKEN, tmp_path / "speech.mp3", rate=22050)
    transcript = await transcribe(provider, path)
    assert wer(" ".join(SPOKEN), transcript.text) < MAX_WER


async def test_a_given_language_is_kept_as_given_without_a_probability(transcript_of: TranscriptOf) -> None:
    transcript = await transcript_of("wav")
    assert (transcript.language, transcript.language_probability, transcript.provider) == ("en-US", None, "whisper")


async def test_english_is_detected_when_no_language_is_given(provider: WhisperProvider, short: Path) -> None:
    transcript = await transcribe(provider, short, language=None)
    assert transcript.language == "en" and (transcript.language_probability or 0) > 0.5


async def test_italian_speech_is_detected_as_italian(provider: WhisperProvider, italian: Path) -> None:
    transcript = await transcribe(provider, italian, language=None)
    assert (transcript.language, (transcript.language_probability or 0) > 0.8) == ("it", True)
    assert wer(" ".join(ITALIAN), transcript.text) < 0.3


async def test_italian_speech_is_translated_to_english(provider: WhisperProvider, italian: Path) -> None:
    transcript = await transcribe(provider, italian, language=None, task=Task.TRANSLATE, targets=("en",))
    text = words(transcript.text)
    assert transcript.language == "en"
    assert "good morning" in text and "train" in text and "roma" not in text.split()[-3:]


async def test_translation_into_another_language_is_refused_before_work(
    provider: WhisperProvider, italian: Path
) -> None:
    error = await failure(provider, item_for(italian), task=Task.TRANSLATE, targets=("de",))
    assert error.code == "unsupported_language" and "English only" in error.message


async def test_segments_are_in_order_within_the_duration_and_scored(transcript_of: TranscriptOf) -> None:
    transcript = await transcript_of("ogg")
    times = [t for s in transcript.segments for t in (s.start, s.end)]
    assert times == sorted(times) and times[0] >= 0 and times[-1] <= transcript.duration  # type: ignore[operator]
    assert all({"avg_logprob", "no_speech_prob", "tokens", "seek"} <= set(s.extra) for s in transcript.segments)


async def test_words_are_timed_in_order_and_inside_the_audio_when_asked(
    provider: WhisperProvider, speech: dict[str, Path]
) -> None:
    transcript = await transcribe(provider, speech["flac"], word_timestamps=True)
    assert transcript.words and transcript.duration
    starts = [w.start for w in transcript.words]
    assert starts == sorted(starts)
    assert all(0 <= w.start <= w.end <= transcript.duration + 0.05 for w in transcript.words)
    assert all(w.text and w.confidence is not None and 0 <= w.confidence <= 1 for w in transcript.words)


async def test_words_are_left_out_unless_asked(transcript_of: TranscriptOf) -> None:
    assert (await transcript_of("webm")).words is None


async def test_silence_gives_an_empty_transcript_not_invented_words(provider: WhisperProvider, tmp_path: Path) -> None:
    from support.speech import encode_pcm

    path = encode_pcm([bytes(16000 * 2 * 20)], tmp_path / "silence.wav", in_rate=16000)
    transcript = await transcribe(provider, path, language=None)
    assert (transcript.text, transcript.segments, round(transcript.duration or 0)) == ("", (), 20)


async def test_progress_reports_rise_to_one(provider: WhisperProvider, long_file: Path) -> None:
    ctx = MemoryStepContext()
    await provider.submit(batch_of(item_for(long_file)), ctx)
    reports = ctx.progress_reports
    assert reports == sorted(reports) and reports[-1] == 1.0 and len(reports) >= 3


async def test_a_long_file_decoded_in_batches_loses_nothing_and_makes_readable_cues(
    whisper_models: Path, long_file: Path
) -> None:
    async with await started(whisper_models, batch_size=4, batch_min_seconds=30) as batched:
        transcript = await transcribe(batched, long_file)
    _, spoken = long_speech(long_file.with_suffix(".again.wav"), 75)
    assert wer(spoken, transcript.text) < MAX_WER
    # Sentence-sized segments timed by their words, as the plain decoder gives, not 30 s chunks.
    segments = transcript.segments
    assert len(segments) >= len(sentence_ends(spoken)) * 0.8
    assert transcript.duration is not None
    assert all(0 <= s.start < s.end <= transcript.duration + 0.5 and s.end - s.start <= 16 for s in segments)
    assert [s.start for s in segments] == sorted(s.start for s in segments)
    assert [s.extra["id"] for s in segments] == list(range(len(segments)))
    assert transcript.words is None  # word times were used, not asked for
    made = cues(transcript)
    assert all(len(c.text) <= CUE_CHARS and c.end - c.start <= 8 for c in made) and len(made) >= 5


def sentence_ends(text: str) -> list[int]:
    return [i for i, ch in enumerate(text) if ch in ".?!"]


async def test_a_finished_job_polls_as_done(provider: WhisperProvider, short: Path) -> None:
    handle = await provider.submit(batch_of(item_for(short)), MemoryStepContext())
    assert (await provider.poll(handle)).state is RemoteState.DONE


async def test_a_truncated_recording_is_transcribed_up_to_the_cut(
    provider: WhisperProvider, speech: dict[str, Path], tmp_path: Path
) -> None:
    data = speech["flac"].read_bytes()
    path = tmp_path / "cut.flac"
    path.write_bytes(data[: len(data) * 6 // 10])  # the first sentence and a bit
    transcript = await transcribe(provider, path)
    assert wer(SPOKEN[0], transcript.segments[0].text) < MAX_WER


async def test_in_a_batch_of_several_files_a_bad_one_fails_alone(
    provider: WhisperProvider, short: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "empty.wav"
    empty.touch()
    handle = await provider.submit(batch_of(item_for(short, "good"), item_for(empty, "bad")), MemoryStepContext())
    good, bad = await provider.fetch(handle)
    assert (good.transcript is not None, bad.error.code if bad.error else None) == (True, "empty_file")


# --- files that cannot be transcribed -----------------------------------------------------


async def test_a_zero_byte_file_fails_as_empty(provider: WhisperProvider, tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.touch()
    error = await failure(provider, item_for(path))
    assert (error.code, str(path) in error.message) == ("empty_file", True)


async def test_random_bytes_named_wav_fail_as_not_audio(provider: WhisperProvider, tmp_path: Path) -> None:
    path = tmp_path / "static.wav"
    path.write_bytes(random.Random(7).randbytes(50_000))
    error = await failure(provider, item_for(path))
    assert (error.code, f"{path} is not a recognisable audio file" in error.message) == ("not_audio", True)


async def test_a_text_file_named_mp3_fails_as_not_audio(provider: WhisperProvider, tmp_path: Path) -> None:
    path = tmp_path / "lyrics.mp3"
    path.write_text("la la la, la la la\n" * 100)
    error = await failure(provider, item_for(path))
    assert (error.code, str(path) in error.message) == ("not_audio", True)


async def test_a_file_cut_before_any_audio_fails_as_corrupt(
    provider: WhisperProvider, speech: dict[str, Path], tmp_path: Path
) -> None:
    path = tmp_path / "stub.flac"
    path.write_bytes(speech["flac"].read_bytes()[:1000])
    error = await failure(provider, item_for(path))
    assert (error.code, str(path) in error.message) == ("corrupt_audio", True)


async def test_a_file_deleted_before_submit_fails_as_missing(
    provider: WhisperProvider, speech: dict[str, Path], tmp_path: Path
) -> None:
    path = tmp_path / "gone.wav"
    path.write_bytes(speech["wav"].read_bytes())
    item = item_for(path)
    path.unlink()
    error = await failure(provider, item)
    assert (error.code, str(path) in error.message) == ("input_missing", True)


async def test_a_file_replaced_after_acceptance_is_refused(
    provider: WhisperProvider, speech: dict[str, Path], tmp_path: Path
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
    provider: WhisperProvider, speech: dict[str, Path], tmp_path: Path
) -> None:
    path = tmp_path / "linked.wav"
    path.write_bytes(speech["wav"].read_bytes())
    item = item_for(path)
    path.unlink()
    path.symlink_to(speech["wav"])
    error = await failure(provider, item)
    assert (error.code, str(path) in error.message) == ("input_unreadable", True)


async def test_a_language_whisper_does_not_know_is_refused(provider: WhisperProvider, short: Path) -> None:
    error = await failure(provider, item_for(short), language="tlh")
    assert error.code == "unsupported_language"


# --- an English-only model -------------------------------------------------------------------


@pytest.fixture(scope="module")
def english_only(whisper_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder whose vocabulary has the English-only size (CTranslate2's test for a
    ``*.en`` model); refusals happen before the model would be loaded."""
    folder = tmp_path_factory.mktemp("models") / "base.en"
    folder.mkdir()
    bundled = whisper_models / "whisper-base"
    for name in ("model.bin", "config.json", "tokenizer.json"):
        (folder / name).symlink_to(bundled / name)
    tokens = (bundled / "vocabulary.txt").read_text().splitlines()
    (folder / "vocabulary.txt").write_text("\n".join(tokens[:-1]) + "\n")
    return folder


async def test_an_english_only_model_refuses_another_language_before_work(
    whisper_models: Path, english_only: Path, short: Path
) -> None:
    async with await started(whisper_models, model=str(english_only)) as english:
        error = await failure(english, item_for(short), language="it")
        assert error.code == "unsupported_language" and "English-only" in error.message
        assert english.worker_pids() == [] and not english.limits.accepts("it")


async def test_an_english_only_model_cannot_translate(whisper_models: Path, english_only: Path) -> None:
    async with await started(whisper_models, model=str(english_only)) as english:
        assert Task.TRANSLATE not in english.limits.tasks and english.limits.accepts("en-GB")


# --- worker processes ----------------------------------------------------------------


async def test_a_killed_worker_fails_its_file_only_and_is_replaced(
    whisper_models: Path, long_file: Path, short: Path
) -> None:
    async with await started(whisper_models, workers=2) as pair:
        ctx = SignallingContext()
        async with asyncio.TaskGroup() as tg:
            doomed = tg.create_task(captured(pair.submit(batch_of(item_for(long_file)), ctx)), name="doomed")
            await ctx.reported.wait()
            other = tg.create_task(captured(transcribe(pair, short, item_id="other")), name="other")
            victim = pair.worker_of("item-1")
            assert victim is not None
            os.kill(victim, signal.SIGKILL)
        error = doomed.result()
        assert isinstance(error, RetryableError) and error.code == "worker_crashed" and "signal 9" in error.message
        assert isinstance(other.result(), Transcript)
        assert (await transcribe(pair, short)).text


async def test_two_files_at_once_run_on_two_workers(whisper_models: Path, short: Path) -> None:
    async with await started(whisper_models, workers=2) as pair:
        first, second = await asyncio.gather(transcribe(pair, short), transcribe(pair, short))
        assert (first.text == second.text != "", len(pair.worker_pids())) == (True, 2)


async def test_a_worker_silent_past_the_stall_timeout_is_stopped(whisper_models: Path, long_file: Path) -> None:
    async with await started(whisper_models, stall_timeout_seconds=0.05) as impatient:
        with pytest.raises(RetryableError) as info:
            await impatient.submit(batch_of(item_for(long_file)), MemoryStepContext())
        assert info.value.code == "worker_timeout"


async def test_a_cancelled_job_frees_its_worker_and_the_next_file_works(
    own_provider: WhisperProvider, long_file: Path, short: Path
) -> None:
    ctx = SignallingContext()
    async with asyncio.TaskGroup() as tg:
        job = tg.create_task(own_provider.submit(batch_of(item_for(long_file)), ctx), name="long-job")
        await ctx.reported.wait()
        (pid,) = own_provider.worker_pids()
        job.cancel()
    assert gone(pid, within=10)
    assert (await transcribe(own_provider, short)).text


async def test_no_worker_process_is_left_after_aclose(own_provider: WhisperProvider, short: Path) -> None:
    await transcribe(own_provider, short)
    pids = own_provider.worker_pids()
    await own_provider.aclose()
    await own_provider.aclose()  # idempotent
    children = {p.pid for p in psutil.Process().children(recursive=True)}
    assert pids and not children & set(pids)


async def test_a_closed_provider_refuses_new_work(own_provider: WhisperProvider, short: Path) -> None:
    await own_provider.aclose()
    with pytest.raises(RetryableError):
        await own_provider.submit(batch_of(item_for(short)), MemoryStepContext())


async def test_workers_do_not_inherit_the_daemons_database(
    own_provider: WhisperProvider, short: Path, tmp_path: Path
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


def tree_rss(process: psutil.Process) -> int:
    """Resident memory of a process and all its children."""
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])


async def test_idle_unload_frees_the_models_memory(whisper_models: Path, short: Path) -> None:
    me = psutil.Process()
    async with await started(whisper_models, idle_unload_seconds=1.0) as idle:
        before = tree_rss(me)
        await transcribe(idle, short)
        loaded, pids = tree_rss(me), idle.worker_pids()
        for _ in range(100):
            await asyncio.sleep(0.1)
            if not idle.loaded and all(gone(pid, within=0) for pid in pids):
                break
        unloaded = tree_rss(me)
        print(
            f"RSS of this process and its children: {before / 1e6:.0f} MB before, {loaded / 1e6:.0f} MB "
            f"with the model loaded, {unloaded / 1e6:.0f} MB after the idle unload"
        )
        assert pids and not idle.loaded and loaded - unloaded > 100e6 and unloaded < before + 30e6
        assert (await transcribe(idle, short)).text  # loads again on demand


# --- settings and options --------------------------------------------------------------


async def test_a_prompt_and_hotwords_are_accepted(provider: WhisperProvider, short: Path) -> None:
    transcript = await transcribe(provider, short, initial_prompt="Children, garden, dog.", hotwords="garden")
    assert "garden" in transcript.text.lower()


async def test_capacity_is_one_job_per_worker(whisper_models: Path) -> None:
    async with await started(whisper_models, workers=3) as three:
        assert three.max_concurrent_jobs == 3


_DAEMON_SCRIPT = """
import asyncio, os, sys
from pathlib import Path
from stenod.provider import Batch, BatchItem, StartContext, Task
from stenod_whisper import WhisperOptions, WhisperProvider, WhisperSettings
from tests.fakes.context import MemoryStepContext

async def main() -> None:
    path, models = Path(sys.argv[1]), Path(sys.argv[2])
    st = path.stat()
    item = BatchItem("a", path, path.name, st.st_size, device=st.st_dev, inode=st.st_ino)
    provider = WhisperProvider(WhisperSettings(workers=1, model_dir=models))
    await provider.start(StartContext(state_dir=models.parent))
    await provider.submit(Batch("b", Task.TRANSCRIBE, (item,), None, (), WhisperOptions()), MemoryStepContext())
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


async def test_workers_exit_when_the_daemon_is_killed(short: Path, whisper_models: Path, tmp_path: Path) -> None:
    script = tmp_path / "daemon.py"
    script.write_text(_DAEMON_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    daemon = await asyncio.create_subprocess_exec(
        sys.executable, str(script), str(short), str(whisper_models), env=env, stdout=subprocess.PIPE
    )
    try:
        assert daemon.stdout is not None
        line = b""
        while not line.strip().isdigit():  # the provider's log lines come first
            line = await daemon.stdout.readline()
            assert line, "the script ended without printing its worker's pid"
        worker_pid = int(line)
    finally:
        daemon.kill()
        await daemon.wait()
    assert await asyncio.to_thread(gone, worker_pid, within=30)
