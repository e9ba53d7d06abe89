"""Fuzzing file names in a watched folder: nothing crashes intake, nothing escapes the folder."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stenod.adapters.folders.files import is_ignored_name
from stenod.adapters.folders.source import FolderSource
from stenod.adapters.folders.writers import FileSink
from stenod.adapters.sqlite.journal import SqliteJournal
from stenod.dispatch.dispatcher import Dispatcher
from stenod.dispatch.stepper import ProviderRuntime
from stenod.settings import RetrySettings, WatchRule
from tests.fakes.scripted import ScriptedProvider

NAME_BYTES = st.binary(min_size=1, max_size=255).filter(
    lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b"..")
)
SPECIAL = st.sampled_from(
    [
        b"..wav",
        b"...",
        b"a.txt",
        b"a.wav",
        b"a.error.json",
        b".a.wav",
        b"x" * 251 + b".wav",
        b"\xff\xfe.wav",
        b"caf\xc3\xa9.mp3",
        b"e\xcc\x81cole.wav",
        b"back\\slash.wav",
        b"new\nline.wav",
        b"-rf.wav",
        b"a.wav.part",
    ]
)
NAMES = st.lists(
    st.one_of(NAME_BYTES.map(lambda b: b[:200] + b".wav"), NAME_BYTES, SPECIAL), min_size=1, max_size=12, unique=True
)


def _run(tmp: Path, names: list[bytes]) -> tuple[list[str], set[str]]:
    inbox = tmp / "inbox"
    inbox.mkdir()
    outside_before = {p.name for p in tmp.iterdir()}
    created: list[bytes] = []
    for raw in names:
        try:
            fd = os.open(os.path.join(os.fsencode(inbox), raw), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError:
            continue  # the file system refused the name itself (e.g. too long)
        os.write(fd, raw[:16] + b"-content")
        os.close(fd)
        created.append(raw)

    async def go() -> list[str]:
        journal = SqliteJournal.open(tmp / "journal.db")
        try:
            provider = ScriptedProvider()
            runtime = ProviderRuntime("scripted", provider, provider.limits, 0.0, 4)
            dispatcher = Dispatcher(
                journal,
                {"scripted": runtime},
                FileSink(tmp / "results"),
                RetrySettings(max_attempts=2, base_seconds=0.01, max_seconds=0.02),
                probe=lambda p: None,
                pack_window_seconds=0.0,
            )
            rule = WatchRule(path=inbox, provider="scripted", settle_seconds=0.0)
            source = FolderSource(rule, journal, dispatcher.notify, provider="scripted", use_watcher=False)
            stopping = asyncio.Event()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(source.run(stopping))
                tg.create_task(dispatcher.run(stopping))
                await source.scanned.wait()
                async with asyncio.timeout(30):
                    while True:
                        views = await journal.jobs(limit=1000)
                        if all(v.state.terminal for v in views) and len(views) >= _expected(rule, inbox, created):
                            break
                        await asyncio.sleep(0.05)
                stopping.set()
            return [item.input for v in await journal.jobs(limit=1000) for item in v.items]
        finally:
            journal.close()

    inputs = asyncio.run(go())
    outside_after = {p.name for p in tmp.iterdir()}
    return inputs, outside_after - outside_before


def _expected(rule: WatchRule, inbox: Path, created: list[bytes]) -> int:
    return sum(1 for raw in created if is_ignored_name(rule, inbox / os.fsdecode(raw)) is None)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=NAMES)
def test_any_file_name_makes_one_job_or_is_ignored_and_nothing_escapes(tmp_path_factory, names):
    tmp = tmp_path_factory.mktemp("fuzz")
    inputs, new_outside = _run(tmp, names)
    assert new_outside <= {"inbox", "journal.db", "journal.db-wal", "journal.db-shm", "results"}
    assert len(inputs) == len(set(inputs))  # one job per file
    for produced in (tmp / "inbox").iterdir():
        assert produced.resolve().parent == (tmp / "inbox").resolve()
    results = tmp / "results"
    assert not results.exists() or not any(results.rglob("*"))  # every input had a folder of its own
