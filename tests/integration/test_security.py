"""Security checks not covered elsewhere (reliability R14–R17).

- Symlinks inside a watched folder never lead a read or a write outside the folder: a
  ``done``/``failed`` folder that is a symlink, a symlinked subfolder of a recursive
  watch, an output folder swapped for a symlink after a request was accepted.
- URL inputs: every way of writing a loopback, private, link-local or otherwise
  non-public address (also as a DNS answer and as a redirect target) is refused before
  any connection. (Literal addresses through the broker: tests/e2e/test_queue_rejects.py;
  the downloader's basics: tests/integration/test_amqp_url_fetch.py.)
- API keys are checked across the whole chaos run (tests/chaos): canary keys from
  ``$CREDENTIALS_DIRECTORY``, provider errors quoting them back, and a grep of every log
  line, event, output and error file, the journal and ``stenod config``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stenod.adapters.downloads.url_downloader import UrlDownloader
from stenod.adapters.downloads.url_policy import UrlPolicy, UrlRefused, system_resolve
from stenod.adapters.folders.atomic import OrphanSweeper
from stenod.adapters.folders.local_inputs import LocalInputs
from stenod.adapters.folders.source import FolderSource
from stenod.adapters.folders.writers import FileSink
from stenod.adapters.sqlite.journal import SqliteJournal
from stenod.dispatch.dispatcher import Dispatcher
from stenod.dispatch.stepper import ProviderRuntime
from stenod.errors import Rejected
from stenod.intake.request_intake import Accepted, Delivery, RequestIntake
from stenod.jobs import JobView
from stenod.provider import ItemResult, Transcript
from stenod.settings import AmqpSettings, RetrySettings, WatchRule
from tests.chaos.fuzzing import Tally, fuzz_settings
from tests.fakes.scripted import ScriptedProvider
from tests.integration.test_amqp_url_fetch import ALIAS, Listener, serving
from tests.integration.test_fuzz_provider_responses import open_item


@dataclass
class Pipeline:
    journal: SqliteJournal
    provider: ScriptedProvider
    dispatcher: Dispatcher
    runtimes: dict[str, ProviderRuntime]

    async def views(self) -> list[JobView]:
        return await self.journal.jobs(limit=1000)

    async def settled(self, count: int, timeout: float = 20.0) -> list[JobView]:
        async with asyncio.timeout(timeout):
            while True:
                views = await self.views()
                if len(views) >= count and all(v.state.terminal for v in views):
                    return views
                await asyncio.sleep(0.05)


@asynccontextmanager
async def pipeline(tmp: Path, *rules: WatchRule) -> AsyncIterator[Pipeline]:
    """The daemon's own journal, dispatcher, writer and folder sources, in this process."""
    journal = SqliteJournal.open(tmp / "state" / "journal.db")
    provider = ScriptedProvider()
    runtime = ProviderRuntime("scripted", provider, provider.limits, 0.0, 4)
    dispatcher = Dispatcher(
        journal,
        {"scripted": runtime},
        FileSink(tmp / "state" / "results"),
        RetrySettings(max_attempts=2, base_seconds=0.01, max_seconds=0.02),
        probe=lambda p: None,
        pack_window_seconds=0.0,
    )
    stopping = asyncio.Event()
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(dispatcher.run(stopping))
            sources = [FolderSource(rule, journal, dispatcher.notify, provider="scripted") for rule in rules]
            for source in sources:
                tg.create_task(source.run(stopping))
            for source in sources:
                await source.scanned.wait()
            try:
                yield Pipeline(journal, provider, dispatcher, {"scripted": runtime})
            finally:
                stopping.set()
    finally:
        journal.close()


def _rule(path: Path, **kw: object) -> WatchRule:
    return WatchRule(path=path, provider="scripted", settle_seconds=0.2, **kw)  # type: ignore[arg-type]


def _read_by_provider(p: Pipeline) -> set[str]:
    return {str(item.path) for batch in p.provider.batches for item in batch.items}


@pytest.mark.parametrize("succeeds", [True, False], ids=["done", "failed"])
async def test_a_done_or_failed_folder_that_is_a_symlink_gets_nothing_written_through_it(
    tmp_path: Path, succeeds: bool
) -> None:
    inbox, outside = tmp_path / "in", tmp_path / "outside"
    inbox.mkdir()
    outside.mkdir()
    (inbox / "done").symlink_to(outside)
    (inbox / "failed").symlink_to(outside)
    async with pipeline(tmp_path, _rule(inbox, after="move")) as p:
        if not succeeds:
            p.provider.fetches.append(lambda: [])  # no result for the file: the item fails
        (inbox / "call.wav").write_bytes(b"audio")
        (view,) = await p.settled(1)
    assert list(outside.iterdir()) == []
    assert (inbox / "call.wav").exists()  # not moved through the link either
    (item,) = view.items
    assert item.state == "failed" and item.error is not None
    if succeeds:  # the outputs could not be written: the item fails saying why
        assert item.error.code == "output_failed" and "symlink" in item.error.message


async def test_a_symlinked_subfolder_of_a_recursive_watch_is_never_read(tmp_path: Path) -> None:
    inbox, outside = tmp_path / "in", tmp_path / "outside"
    inbox.mkdir()
    outside.mkdir()
    (inbox / "sub").symlink_to(outside, target_is_directory=True)
    async with pipeline(tmp_path, _rule(inbox, recursive=True)) as p:
        await asyncio.sleep(0.3)  # the watcher is armed
        (outside / "canary.wav").write_bytes(b"CANARY audio from outside the watched folder")
        (inbox / "real.wav").write_bytes(b"audio")
        await p.settled(1)
        await asyncio.sleep(1.0)  # time enough for any event about the canary to be taken
        views = await p.views()
        read = _read_by_provider(p)
    assert [Path(i.input).name for v in views for i in v.items] == ["real.wav"]
    assert not any("canary" in path for path in read)
    assert sorted(p.name for p in outside.iterdir()) == ["canary.wav"]  # nothing written there either


async def test_an_output_folder_swapped_for_a_symlink_after_acceptance_gets_nothing(tmp_path: Path) -> None:
    roots, outside = tmp_path / "roots", tmp_path / "outside"
    (roots / "out").mkdir(parents=True)
    outside.mkdir()
    (roots / "call.wav").write_bytes(b"audio")
    async with pipeline(tmp_path) as p:
        intake = RequestIntake(
            p.journal,
            LocalInputs([roots], UrlPolicy()),
            lambda: (p.runtimes, {}),
            default_provider="scripted",
            max_body_bytes=AmqpSettings().max_body_bytes,
        )
        p.provider.block_submit = asyncio.Event()  # hold the job while the folder is swapped
        request = {"inputs": [{"path": str(roots / "call.wav")}], "output": {"dir": str(roots / "out")}}
        outcome = await intake.handle(Delivery(body=json.dumps(request).encode(), message_id="m1"))
        intake.close()
        assert isinstance(outcome, Accepted)
        p.dispatcher.notify()
        async with asyncio.timeout(10):
            while not p.provider.batches:
                await asyncio.sleep(0.05)
        (roots / "out").rmdir()
        (roots / "out").symlink_to(outside, target_is_directory=True)
        p.provider.block_submit.set()
        (view,) = await p.settled(1)
    assert list(outside.iterdir()) == [], f"written through the symlink; job {view.state}"
    assert view.items[0].error is not None and "symlink" in view.items[0].error.message


# -- URL inputs ------------------------------------------------------------------------------

NON_PUBLIC = [
    ipaddress.ip_network(n)
    for n in (
        "127.0.0.0/8",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "100.64.0.0/10",
        "0.0.0.0/8",
    )
]


def _spellings(ip: ipaddress.IPv4Address) -> list[str]:
    """Ways of writing an IPv4 address in a URL host that resolvers and parsers accept."""
    n = int(ip)
    a, b, c, d = ip.packed
    return [
        str(ip),
        str(n),
        hex(n),
        f"0{a:o}.{b}.{c}.{d}",
        f"{a}.{(b << 16) | (c << 8) | d}",
        f"[::ffff:{ip}]",
        f"[::ffff:{(a << 8) | b:x}:{(c << 8) | d:x}]",
        f"{hex(a)}.{hex(b)}.{hex(c)}.{hex(d)}",
    ]


ADDRESSES = st.sampled_from(NON_PUBLIC).flatmap(
    lambda net: st.integers(0, net.num_addresses - 1).map(lambda k: net.network_address + k)
)


def test_every_spelling_of_a_non_public_address_is_refused(tmp_path: Path) -> None:
    tally = Tally("security/non-public address spellings")
    policy = UrlPolicy(allow_http=True)

    @fuzz_settings(150)
    @given(ADDRESSES, st.data())
    def check(ip: ipaddress.IPv4Address, data: st.DataObject) -> None:
        host = data.draw(st.sampled_from(_spellings(ip)))
        url = f"http://{host}:8080/a.mp3"
        try:
            checked = policy.check_syntax(url)
            asyncio.run(policy.resolve(checked, system_resolve))
        except UrlRefused:
            tally.record("refused")
            return
        except OSError:
            tally.record("unresolvable (no connection possible)")
            return
        pytest.fail(f"{url} ({ip}) was allowed")

    check()
    tally.report()


@pytest.mark.parametrize(
    "answer",
    [
        "127.0.0.1",
        "10.1.2.3",
        "192.168.1.1",
        "169.254.169.254",
        "::1",
        "fe80::1",
        "fd12:3456::1",
        "100.64.0.1",
        "::ffff:127.0.0.1",
        "0.0.0.0",
    ],
)
async def test_a_request_url_whose_name_resolves_to_a_non_public_address_is_rejected(
    tmp_path: Path, answer: str
) -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return [answer]

    journal = SqliteJournal.open(tmp_path / "journal.db")
    try:
        provider = ScriptedProvider()
        runtime = ProviderRuntime("scripted", provider, provider.limits, 0.0, 4)
        intake = RequestIntake(
            journal,
            LocalInputs([], UrlPolicy(), resolver),
            lambda: ({"scripted": runtime}, {}),
            default_provider="scripted",
            max_body_bytes=AmqpSettings().max_body_bytes,
        )
        body = json.dumps({"inputs": [{"url": "https://media.example.org/talk.mp3"}]}).encode()
        outcome = await intake.handle(Delivery(body=body, message_id="m1"))
        intake.close()
    finally:
        journal.close()
    assert isinstance(outcome, Rejected) and outcome.code == "url_not_allowed", outcome
    assert answer.split("%")[0].removeprefix("::ffff:") in outcome.reason


@pytest.mark.parametrize(
    ("answer", "inside"),
    [
        ("2002:7f00:1::", "127.0.0.1"),
        ("2002:a9fe:a9fe::", "169.254.169.254"),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "127.0.0.1"),
        ("2001:0:808:808:8000:63bf:f5ff:fefe", "10.0.1.1"),
    ],
)
async def test_a_dns_answer_tunnelling_to_a_private_ipv4_is_judged_as_that_ipv4(answer: str, inside: str) -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return ["2606:4700::1111", answer]

    with pytest.raises(UrlRefused, match=re.escape(f"address {inside} ")):
        await UrlPolicy().resolve(UrlPolicy().check_syntax("https://media.example.org/a.mp3"), resolver)


async def test_a_dns_answer_of_6to4_around_a_public_ipv4_passes() -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return ["2002:808:808::1"]

    url = UrlPolicy().check_syntax("https://media.example.org/a.mp3")
    assert await UrlPolicy().resolve(url, resolver) == "2002:808:808::1"


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:{port}/",
        "http://0x7f000001:{port}/",
        "http://2130706433:{port}/",
        "http://[::ffff:127.0.0.1]:{port}/",
        "http://localhost:{port}/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "file:///etc/hostname",
        "//127.0.0.1:{port}/",
    ],
)
async def test_a_redirect_to_any_non_public_address_is_refused_at_the_hop(tmp_path: Path, target: str) -> None:
    with serving(Listener(routes={"/": (200, {}, b"canary")})) as trap:
        location = target.format(port=trap.port)
        with serving(Listener(ALIAS, routes={"/a.mp3": (302, {"Location": location}, b"")})) as bounce:
            policy = UrlPolicy(allow_http=True, allowed_networks=(ipaddress.ip_network(f"{ALIAS}/32"),))
            fetcher = UrlDownloader(policy, max_bytes=1_000_000, timeout_seconds=10)
            try:
                with pytest.raises(UrlRefused):
                    await fetcher.fetch(bounce.url("/a.mp3"), tmp_path / "a.mp3")
            finally:
                await fetcher.aclose()
        assert trap.connections == 0 and bounce.connections == 1
    assert not (tmp_path / "a.mp3").exists()


# -- outputs after a crash -------------------------------------------------------------------


def _dead_pid() -> int:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(gone.stdout)  # that process has exited: its temp files are orphans


def test_temp_files_left_by_a_killed_writer_are_removed_by_the_next_write_in_their_folder(tmp_path: Path) -> None:
    """Found by the long chaos run: a kill -9 between creating an output's temp file and
    renaming it left ``.name.<pid>.….stenod-tmp`` behind for good (R15)."""
    dead_pid = _dead_pid()
    audio = tmp_path / "call.wav"
    audio.write_bytes(b"audio")
    stale = [
        tmp_path / f".call.txt.{dead_pid}.140213.5f3a9c1e.stenod-tmp",
        tmp_path / f".other.json.{dead_pid}.140213.0b7d22aa.stenod-tmp",
    ]
    for path in stale:
        path.write_text("half a transcr")
    in_flight = tmp_path / f".call.vtt.{os.getpid()}.99.c0ffee00.stenod-tmp"  # a live writer's: not ours to touch
    in_flight.write_text("being written")
    item = open_item(audio, "i1", tmp_path)
    FileSink(tmp_path).write_result(item, ItemResult("i1", transcript=Transcript("hello", "en", 1.0)))
    assert [p for p in stale if p.exists()] == [] and in_flight.exists()


def test_a_folder_is_swept_for_orphans_once_per_interval_not_on_every_write(tmp_path: Path) -> None:
    """Sweeping on every write listed the whole folder per output: with thousands of
    recordings in one folder that halved the queue's round trips (bench/bench_queue.py)."""
    sweeper = OrphanSweeper(every_seconds=600)
    sweeper.visit(tmp_path)
    orphan = tmp_path / f".late.txt.{_dead_pid()}.1.00000000.stenod-tmp"
    orphan.write_text("x")
    sweeper.visit(tmp_path)
    assert orphan.exists()  # swept at most every 10 minutes
    OrphanSweeper(every_seconds=0).visit(tmp_path)
    assert not orphan.exists()
