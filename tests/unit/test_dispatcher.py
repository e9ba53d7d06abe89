"""The dispatcher against a scripted provider, a real SQLite journal and real files."""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from stenod.adapters.folders.writers import FileSink
from stenod.adapters.sqlite.journal import SqliteJournal
from stenod.dispatch.dispatcher import Dispatcher
from stenod.dispatch.pacing import backoff_delay
from stenod.dispatch.stepper import ProviderRuntime
from stenod.errors import ErrorInfo, JournalError, PermanentError, RetryableError
from stenod.jobs import JobState, JobView
from stenod.journal import NewItem, NewJob
from stenod.output_spec import OutputSpec
from stenod.provider import ItemResult, Limits, RemoteState, Status, Task, Transcript
from stenod.settings import RetrySettings
from tests.fakes.scripted import ScriptedProvider

POLICY = RetrySettings(max_attempts=3, base_seconds=0.02, max_seconds=0.1)


@pytest.fixture
async def journal(tmp_path: Path):
    j = SqliteJournal.open(tmp_path / "journal.db")
    yield j
    j.close()


def dispatcher_for(
    journal: SqliteJournal,
    provider: ScriptedProvider,
    tmp_path: Path,
    *,
    poll_interval: float | None = None,
    max_concurrent: int = 4,
    grace: float = 5.0,
    probe=lambda p: None,
) -> Dispatcher:
    runtime = ProviderRuntime(
        "scripted",
        provider,
        provider.limits,
        poll_interval if poll_interval is not None else provider.limits.min_poll_seconds,
        max_concurrent,
    )
    return Dispatcher(
        journal,
        {"scripted": runtime},
        FileSink(tmp_path / "results"),
        POLICY,
        probe=probe,
        pack_window_seconds=0.05,
        progress_interval_seconds=0.0,
        grace_seconds=grace,
    )


def audio_files(tmp_path: Path, count: int, size: int = 100, prefix: str = "a") -> list[Path]:
    inbox = tmp_path / "in"
    inbox.mkdir(exist_ok=True)
    files = []
    for n in range(count):
        path = inbox / f"{prefix}{n:02d}.wav"
        path.write_bytes(b"x" * size)
        files.append(path)
    return files


async def submit_job(journal: SqliteJournal, files: Sequence[Path], **kwargs) -> str:
    items = []
    for f in files:
        st = f.stat()
        items.append(
            NewItem(
                input=str(f),
                name=f.name,
                path=str(f),
                size=st.st_size,
                device=st.st_dev,
                inode=st.st_ino,
                reused_result=kwargs.pop("reused", None),
            )
        )
    view, created = await journal.create_job(
        NewJob(
            source="test",
            task="transcribe",
            provider="scripted",
            items=items,
            output=OutputSpec(formats=("txt", "json")),
            **kwargs,
        )
    )
    assert created
    return view.job_id


async def run_until_terminal(
    journal: SqliteJournal, dispatcher: Dispatcher, job_ids: Sequence[str], timeout: float = 20.0
) -> list[JobView]:
    stopping = asyncio.Event()
    views: list[JobView] = []
    async with asyncio.TaskGroup() as tg:
        tg.create_task(dispatcher.run(stopping))
        try:
            async with asyncio.timeout(timeout):
                while True:
                    views = [v for j in job_ids if (v := await journal.job(j)) is not None]
                    if len(views) == len(job_ids) and all(v.state.terminal for v in views):
                        break
                    await asyncio.sleep(0.02)
        finally:
            stopping.set()
    return views


async def test_items_are_packed_into_as_few_provider_jobs_as_the_limits_allow(journal, tmp_path):
    provider = ScriptedProvider()
    job = await submit_job(journal, audio_files(tmp_path, 25))
    [view] = await run_until_terminal(journal, dispatcher_for(journal, provider, tmp_path), [job])
    assert view.state == JobState.SUCCEEDED
    assert sorted(len(b.items) for b in provider.batches) == [5, 10, 10]
    assert all(len(item.outputs) == 2 for item in view.items)


async def test_batch_bytes_limit_splits_provider_jobs(journal, tmp_path):
    provider = ScriptedProvider(
        limits=Limits(tasks=frozenset({Task.TRANSCRIBE}), formats=frozenset({"wav"}), max_files=10, max_batch_bytes=250)
    )
    job = await submit_job(journal, audio_files(tmp_path, 5, size=100))
    await run_until_terminal(journal, dispatcher_for(journal, provider, tmp_path), [job])
    assert sorted(len(b.items) for b in provider.batches) == [1, 2, 2]


async def test_item_over_the_file_limit_fails_naming_the_limit_without_a_provider_call(journal, tmp_path):
    provider = ScriptedProvider(
        limits=Limits(tasks=frozenset({Task.TRANSCRIBE}), formats=frozenset({"wav"}), max_files=10, max_file_bytes=150)
    )
    small = audio_files(tmp_path, 2, size=100, prefix="small")
    big = audio_files(tmp_path, 1, size=200, prefix="big")
    job = await submit_job(journal, [*small, *big])
    [view] = await run_until_terminal(journal, dispatcher_for(journal, provider, tmp_path), [job])
    assert view.state == JobState.PARTIAL
    failed = [i for i in view.items if i.error]
    assert [Path(i.input).name for i in failed] == ["big00.wav"]
    assert failed[0].error is not None
    assert failed[0].error.code == "over_limit" and "at most 150 bytes per file" in failed[0].error.message
    assert [len(b.items) for b in provider.batches] == [2]
    error_file = json.loads((big[0].parent / "big00.error.json").read_text())
    assert error_file["error"]["code"] == "over_limit" and error_file["what_to_do"]


async def test_audio_longer_than_the_provider_allows_fails_before_upload(journal, tmp_path):
    provider = ScriptedProvider(
        limits=Limits(tasks=frozenset({Task.TRANSCRIBE}), formats=frozenset({"wav"}), max_audio_seconds=60)
    )
    job = await submit_job(journal, audio_files(tmp_path, 1))
    [view] = await run_until_terminal(journal, dispatcher_for(journal, provider, tmp_path, probe=lambda p: 61.5), [job])
    assert view.items[0].error is not None
    assert view.state == JobState.FAILED and view.items[0].error.code == "over_limit"
    assert "at most 60 s" in view.items[0].error.message
    assert provider.of("submit") == []


async def test_retryable_error_is_retried_no_sooner_than_retry_after(journal, tmp_path):
    provider = ScriptedProvider()
    provider.submits.append(RetryableError("429", retry_after=0.4))
    job = await submit_job(journal, audio_files(tmp_path, 1))
    [view] = await run_until_terminal(journal, dispatcher_for(journal, provider, tmp_path), [job])
    submits = provider.of("submit")
    assert view.state == JobState.SUCCEEDED and len(submits) == 2
    assert submits[1].at - submits[0].at >= 0.4
    assert submits[1].args == {"remote": f"r-{provider.batches[0].batch_id}"}  # resumed from its checkpoint


async def test_permanent_error_fails_the_job_at_once_with_the_providers_message(journal, tmp_path):
    provider = ScriptedProvider()
    provider.submits.append(PermanentError("scripted refused the request (400): bad codec", code="http_400"))
    files = audio_files(tmp_path, 1)
    job = await submit_job(journal, files)
    [view] = await run_until_terminal(journal, dispatcher_for(journal, provider, tmp_path), [job])
    assert view.state == JobState.FAILED
    assert view.error is not None and view.error.code == "http_400" and "bad codec" in view.error.message
    assert len(provider.of("submit")) == 1
    assert (files[0].parent / "a00.error.json").exists()


async def test_retries_stop_at_the_limit_and_the_job_fails_with_the_last_error(journal, tmp_path):
    provider = ScriptedProvider()
    provider.polls.extend([RetryableError("scripted answered 503", code="http_503")] * 10)
    job = await submit_job(journal, audio_files(tmp_path, 1))
    [view] = await run_until_terminal(journal, dispatcher_for(journal, provider, tmp_path), [job])
    assert view.state == JobState.FAILED
    assert len(provider.of("poll")) == POLICY.max_attempts
    assert view.error is not None
    assert view.error.code == "http_503" and "gave up after 3 attempts" in view.error.message


async def test_polls_are_spaced_by_the_minimum_interval_and_their_count_is_minimal(journal, tmp_path):
    provider = ScriptedProvider()
    provider.polls.extend([Status(RemoteState.RUNNING, progress=0.5)] * 4)
    job = await submit_job(journal, audio_files(tmp_path, 1))
    await run_until_terminal(journal, dispatcher_for(journal, provider, tmp_path, poll_interval=0.25), [job])
    polls = provider.of("poll")
    assert len(polls) == 5
    gaps = [b.at - a.at for a, b in itertools.pairwise(polls)]
    assert min(gaps) >= 0.25
    assert polls[0].at - provider.of("submit")[0].at >= 0.25  # also waits after submit


async def test_a_retry_after_on_a_status_answer_delays_the_next_poll(journal, tmp_path):
    provider = ScriptedProvider()
    provider.polls.append(Status(RemoteState.RUNNING, retry_after=0.5))
    job = await submit_job(journal, audio_files(tmp_path, 1))
    await run_until_terminal(journal, dispatcher_for(journal, provider, tmp_path, poll_interval=0.01), [job])
    first, second = provider.of("poll")
    assert second.at - first.at >= 0.5


async def test_per_item_failures_make_the_job_partial_with_each_items_error(journal, tmp_path):
    files = audio_files(tmp_path, 2)
    provider = ScriptedProvider()

    def results():
        ids = [i.item_id for i in provider.batches[0].items]
        return [
            ItemResult(ids[0], transcript=Transcript("hello", "en", 1.0)),
            ItemResult(ids[1], error=ErrorInfo("API Error", "file 2 could not be decoded")),
        ]

    provider.fetches.append(results)
    job = await submit_job(journal, files)
    [view] = await run_until_terminal(journal, dispatcher_for(journal, provider, tmp_path), [job])
    assert view.state == JobState.PARTIAL
    assert [i.state for i in view.items] == ["succeeded", "failed"]
    assert view.items[1].error is not None
    assert view.items[1].error.message == "file 2 could not be decoded"


async def test_a_restart_resumes_the_provider_job_from_its_checkpoint_instead_of_creating_another(journal, tmp_path):
    first = ScriptedProvider(block_submit=asyncio.Event())
    job = await submit_job(journal, audio_files(tmp_path, 1))
    stopping = asyncio.Event()
    dispatcher = dispatcher_for(journal, first, tmp_path, grace=0.0)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(dispatcher.run(stopping))
        async with asyncio.timeout(10):
            while not (await journal.active_batches() and (await journal.active_batches())[0].checkpoint):
                await asyncio.sleep(0.02)
        stopping.set()  # grace 0: the blocked submit is interrupted, like a crash
    assert (await journal.job(job)).state == JobState.ACCEPTED

    second = ScriptedProvider()
    [view] = await run_until_terminal(journal, dispatcher_for(journal, second, tmp_path), [job])
    assert view.state == JobState.SUCCEEDED
    [resumed] = second.of("submit")
    assert resumed.args == {"remote": f"r-{first.batches[0].batch_id}"}


async def test_a_reused_result_is_written_without_calling_the_provider(journal, tmp_path):
    provider = ScriptedProvider()
    earlier = {"transcript": Transcript("already known", "en", 2.0).to_json()}
    files = audio_files(tmp_path, 1)
    job = await submit_job(journal, files, reused=earlier)
    [view] = await run_until_terminal(journal, dispatcher_for(journal, provider, tmp_path), [job])
    assert view.state == JobState.SUCCEEDED and provider.calls == []
    assert (files[0].parent / "a00.txt").read_text() == "already known\n"


async def test_cancel_request_cancels_waiting_items(journal, tmp_path):
    gate = asyncio.Event()
    provider = ScriptedProvider(block_submit=gate)
    busy = await submit_job(journal, audio_files(tmp_path, 4, prefix="busy"))  # occupies the only slot
    waiting = await submit_job(journal, audio_files(tmp_path, 1, prefix="wait"))
    provider.limits = Limits(tasks=frozenset({Task.TRANSCRIBE}), formats=frozenset({"wav"}), max_files=4)
    dispatcher = dispatcher_for(journal, provider, tmp_path, max_concurrent=1)
    await journal.request_cancel(waiting)
    stopping = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(dispatcher.run(stopping))
        async with asyncio.timeout(10):
            while not (await journal.job(waiting)).state.terminal:
                await asyncio.sleep(0.02)
        gate.set()
        async with asyncio.timeout(10):
            while not (await journal.job(busy)).state.terminal:
                await asyncio.sleep(0.02)
        stopping.set()
    assert (await journal.job(waiting)).state == JobState.CANCELLED
    assert (await journal.job(busy)).state == JobState.SUCCEEDED


def test_backoff_grows_and_never_undercuts_retry_after():
    policy = RetrySettings(max_attempts=10, base_seconds=1, max_seconds=30)
    assert all(0.5 <= backoff_delay(1, policy, None) <= 1 for _ in range(50))
    assert all(4 <= backoff_delay(4, policy, None) <= 8 for _ in range(50))
    assert all(15 <= backoff_delay(9, policy, None) <= 30 for _ in range(50))
    assert all(backoff_delay(1, policy, 7.0) >= 7.0 for _ in range(50))


async def test_a_rate_limited_status_call_is_pacing_and_does_not_use_up_attempts(journal, tmp_path):
    provider = ScriptedProvider()
    provider.polls.extend([RetryableError("429", retry_after=0.05, code="http_429")] * (POLICY.max_attempts + 2))
    job = await submit_job(journal, audio_files(tmp_path, 1))
    [view] = await run_until_terminal(journal, dispatcher_for(journal, provider, tmp_path), [job])
    assert view.state == JobState.SUCCEEDED
    assert len(provider.of("poll")) == POLICY.max_attempts + 3


async def test_remote_copies_are_released_once_after_the_results_are_committed(journal, tmp_path):
    def committed_state() -> str:
        with sqlite3.connect(tmp_path / "journal.db") as conn:  # another connection sees only commits
            return str(conn.execute("SELECT state FROM jobs").fetchone()[0])

    provider = ScriptedProvider(on_release=committed_state)
    job = await submit_job(journal, audio_files(tmp_path, 1))
    [view] = await run_until_terminal(journal, dispatcher_for(journal, provider, tmp_path), [job])
    assert [c.operation for c in provider.calls] == ["submit", "poll", "fetch", "release"]
    assert provider.of("release")[0].args == "succeeded" == view.state


async def test_files_dropped_together_start_biggest_first_on_a_one_file_provider(journal, tmp_path):
    provider = ScriptedProvider(limits=replace(ScriptedProvider().limits, max_files=1))
    small = audio_files(tmp_path, 2, size=100, prefix="small")
    (big,) = audio_files(tmp_path, 1, size=5000, prefix="big")
    jobs = [await submit_job(journal, [f]) for f in (*small, big)]
    dispatcher = dispatcher_for(journal, provider, tmp_path, max_concurrent=1)
    await run_until_terminal(journal, dispatcher, jobs)
    assert provider.batches[0].items[0].name == "big00.wav"


class CommitInDoubt(SqliteJournal):
    """A journal whose commit of a provider job's outcomes is in doubt, as the PostgreSQL
    driver reports a COMMIT whose answer the connection lost (nothing is committed here)."""

    async def finish_items(self, outcomes, *, batch_id=None, batch_state=None, batch_error=None):
        if batch_id is not None:
            raise JournalError("journal commit in doubt (the database connection failed)")
        return await super().finish_items(outcomes, batch_id=batch_id, batch_state=batch_state, batch_error=batch_error)


async def test_a_commit_in_doubt_stops_the_daemon_instead_of_failing_the_job_beside_its_outputs(tmp_path):
    """Found by a cluster chaos run (seed 455711934): a JournalError from recording a provider
    job's outcome was taken for the job's own failure (internal_error): an ``.error.json``
    was written beside the outputs the doubtful commit was about. It must stop the daemon
    (exit 1, the restart reads what was committed) and write no error file."""
    journal = CommitInDoubt.open(tmp_path / "journal.db")
    try:
        files = audio_files(tmp_path, 1)
        job = await submit_job(journal, files)
        with pytest.raises(ExceptionGroup) as info:
            await run_until_terminal(journal, dispatcher_for(journal, ScriptedProvider(), tmp_path), [job])
        assert info.group_contains(JournalError)
        assert not list(files[0].parent.glob("*.error.json"))
        view = await journal.job(job)
        assert view is not None and not view.state.terminal
    finally:
        journal.close()
