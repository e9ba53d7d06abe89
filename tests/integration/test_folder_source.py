"""The folder source on real folders with the real watcher (watchfiles)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from stenod.adapters.folders.atomic import atomic_write, output_key
from stenod.adapters.folders.source import FolderSource
from stenod.adapters.sqlite.journal import SqliteJournal
from stenod.jobs import JobView
from stenod.journal import NewItem, NewJob
from stenod.settings import WatchRule


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[SqliteJournal]:
    j = SqliteJournal.open(tmp_path / "journal.db")
    yield j
    j.close()


@asynccontextmanager
async def watching(journal: SqliteJournal, rule: WatchRule, **kwargs) -> AsyncIterator[FolderSource]:
    stopping = asyncio.Event()
    source = FolderSource(rule, journal, lambda: None, provider="echo", **kwargs)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(source.run(stopping))
        try:
            yield source
        finally:
            stopping.set()


async def wait_for(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await _call(predicate):
            await asyncio.sleep(0.05)


async def _call(predicate: Callable[[], object]) -> object:
    result = predicate()
    return await result if asyncio.iscoroutine(result) else result


async def jobs(journal: SqliteJournal) -> list[JobView]:
    return await journal.jobs(limit=1000)


async def inputs(journal: SqliteJournal) -> list[str]:
    return sorted(Path(item.input).name for view in await jobs(journal) for item in view.items)


def rule_for(path: Path, **kw) -> WatchRule:
    return WatchRule(path=path, provider="echo", settle_seconds=kw.pop("settle_seconds", 0.3), **kw)


async def test_a_file_written_slowly_is_taken_once_with_its_final_size(journal, tmp_path):
    inbox = tmp_path / "in"
    inbox.mkdir()
    async with watching(journal, rule_for(inbox, settle_seconds=0.6)) as source:
        await source.scanned.wait()
        with (inbox / "talk.wav").open("wb") as fh:
            for _ in range(8):
                fh.write(b"x" * 4096)
                fh.flush()
                await asyncio.sleep(0.2)  # slower than nothing, faster than the settle time
        await wait_for(lambda: _has_jobs(journal, 1))
        await asyncio.sleep(1.0)
    [view] = await jobs(journal)
    assert [Path(i.input).name for i in view.items] == ["talk.wav"]
    assert (await journal.job(view.job_id)) is not None
    assert len(await jobs(journal)) == 1


async def _has_jobs(journal: SqliteJournal, count: int) -> bool:
    return len(await jobs(journal)) >= count


async def test_a_file_renamed_from_a_partial_name_is_taken_without_waiting_to_settle(journal, tmp_path):
    inbox = tmp_path / "in"
    inbox.mkdir()
    async with watching(journal, rule_for(inbox, settle_seconds=3600)) as source:
        await source.scanned.wait()
        part = inbox / "memo.wav.part"
        part.write_bytes(b"y" * 1000)
        await asyncio.sleep(0.3)
        part.rename(inbox / "memo.wav")
        await wait_for(lambda: _has_jobs(journal, 1))
    assert await inputs(journal) == ["memo.wav"]


async def test_partial_dot_and_own_output_files_are_ignored(journal, tmp_path):
    inbox = tmp_path / "in"
    inbox.mkdir()
    for name in (
        "a.wav.part",
        "b.wav.crdownload",
        "c.tmp",
        ".hidden.wav",
        "d.txt",
        "d.json",
        "d.srt",
        "d.vtt",
        "e.error.json",
    ):
        (inbox / name).write_bytes(b"z")
    (inbox / "real.wav").write_bytes(b"audio")
    async with watching(journal, rule_for(inbox)) as source:
        await source.scanned.wait()
        await wait_for(lambda: _has_jobs(journal, 1))
        await asyncio.sleep(0.8)
    assert await inputs(journal) == ["real.wav"]


async def test_a_file_stenod_is_writing_waits_until_recorded_and_is_then_never_taken(journal, tmp_path):
    """stenod records a file before writing it (``expect_outputs``), so a translating folder
    that sees it appear (renamed into place: taken at once if it were a user's) waits, and
    once the write is recorded, knows it for stenod's; a user's file in its place is work."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    item = (await journal.create_job(_one_item_job(tmp_path / "x.wav")))[0].items[0].item_id
    async with watching(journal, rule_for(inbox, task="translate", target_language="en")) as source:
        await source.scanned.wait()
        await journal.expect_outputs({item: [output_key(inbox / "call.txt")]})
        written = atomic_write(inbox / "call.txt", b"stenod's translation\n")  # temp file, then rename
        await asyncio.sleep(1.5)  # three re-checks while it is being written
        assert await inputs(journal) == ["x.wav"]
        await journal.record_outputs(item, [written])
        await asyncio.sleep(1.0)
        assert await inputs(journal) == ["x.wav"]

        (inbox / "call.txt").write_text("the user's own notes, now under that name\n")
        await wait_for(lambda: _has_jobs(journal, 2))
    assert await inputs(journal) == ["call.txt", "x.wav"]


def _one_item_job(path: Path) -> NewJob:
    return NewJob(source="test", task="transcribe", provider="echo", items=[NewItem(input=str(path), name=path.name)])


async def test_links_and_special_files_are_refused_and_nothing_outside_is_read(journal, tmp_path):
    inbox = tmp_path / "in"
    inbox.mkdir()
    canary = tmp_path / "secret.wav"
    canary.write_bytes(b"CANARY")
    (inbox / "link.wav").symlink_to(canary)
    (inbox / "dirlink").symlink_to(tmp_path)
    os.link(canary, inbox / "hard.wav")
    os.mkfifo(inbox / "pipe.wav")
    (inbox / "ok.wav").write_bytes(b"fine")
    with capture_logs() as logs:
        async with watching(journal, rule_for(inbox)) as source:
            await source.scanned.wait()
            await wait_for(lambda: _has_jobs(journal, 1))
            await asyncio.sleep(0.8)
    assert await inputs(journal) == ["ok.wav"]
    refused = {Path(e["path"]).name: e["reason"] for e in logs if e["event"] == "file.refused"}
    assert set(refused) == {"link.wav", "dirlink", "hard.wav", "pipe.wav"}
    assert "symlink" in refused["link.wav"] and "hard link" in refused["hard.wav"]


async def test_files_present_at_start_are_taken_by_the_startup_scan(journal, tmp_path):
    inbox = tmp_path / "in"
    inbox.mkdir()
    for n in range(5):
        (inbox / f"{n}.wav").write_bytes(b"a" * (n + 1))
    async with watching(journal, rule_for(inbox), use_watcher=False):
        await wait_for(lambda: _has_jobs(journal, 5))
    assert await inputs(journal) == [f"{n}.wav" for n in range(5)]


async def test_the_periodic_rescan_finds_files_the_watcher_missed(journal, tmp_path):
    inbox = tmp_path / "in"
    inbox.mkdir()
    async with watching(journal, rule_for(inbox), use_watcher=False, rescan_seconds=0.5) as source:
        await source.scanned.wait()
        (inbox / "late.wav").write_bytes(b"late")
        await wait_for(lambda: _has_jobs(journal, 1))
    assert await inputs(journal) == ["late.wav"]


async def test_intake_is_idempotent_across_restarts(journal, tmp_path):
    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / "once.wav").write_bytes(b"once")
    for _ in range(2):
        async with watching(journal, rule_for(inbox), use_watcher=False):
            await wait_for(lambda: _has_jobs(journal, 1))
            await asyncio.sleep(0.6)
    assert await inputs(journal) == ["once.wav"]


async def test_a_changed_file_is_taken_again(journal, tmp_path):
    inbox = tmp_path / "in"
    inbox.mkdir()
    path = inbox / "edit.wav"
    path.write_bytes(b"v1")
    async with watching(journal, rule_for(inbox)) as source:
        await source.scanned.wait()
        await wait_for(lambda: _has_jobs(journal, 1))
        path.write_bytes(b"version two")
        await wait_for(lambda: _has_jobs(journal, 2))


async def test_a_missing_watch_path_is_reported_and_watched_once_it_appears(journal, tmp_path):
    inbox = tmp_path / "later"
    with capture_logs() as logs:
        async with watching(journal, rule_for(inbox), rescan_seconds=0.3):
            await asyncio.sleep(0.5)
            inbox.mkdir()
            (inbox / "x.wav").write_bytes(b"x")
            await wait_for(lambda: _has_jobs(journal, 1))
    assert any(e["event"] == "watch.path_missing" for e in logs)
