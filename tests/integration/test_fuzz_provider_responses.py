"""Fuzzing provider answers: each field of an answer missing, of the wrong type, huge, with
extra fields, or a name that tries to leave the output folder, through the real plugins
(Sarvam and Vachana) talking to their faithful fakes in-process, one answer mutated per
job (or every matching answer).

For every example the job ends as the dispatcher would see it: results (each a transcript
or an item error), or a stenod error (retryable, permanent, auth), never any other
exception; an error has a code and a message and never quotes the API key; the handle is
JSON; and the results written through the daemon's own writer land in the output folder
and nowhere else. A second class fuzzes what a provider hands the writer directly (names,
languages, extensions, odd transcripts).
"""

from __future__ import annotations

import asyncio
import json
import math
import wave
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from stenod.adapters.folders.writers import FileSink, safe_stem
from stenod.adapters.sqlite.journal import SqliteJournal
from stenod.dispatch.dispatcher import Dispatcher
from stenod.dispatch.stepper import ProviderRuntime
from stenod.jobs import ItemState
from stenod.journal import NewItem, NewJob, OpenItem
from stenod.output_spec import OutputSpec
from stenod.provider import (
    Batch,
    BatchItem,
    ErrorInfo,
    ItemResult,
    JobError,
    RemoteState,
    RetryableError,
    Segment,
    Task,
    Transcript,
    TranslatedDocument,
    provider_http_errors,
)
from stenod.settings import RetrySettings
from stenod_sarvam import SarvamProvider
from stenod_sarvam.options import SarvamOptions, SarvamSettings
from stenod_vachana import VachanaProvider
from stenod_vachana.options import VachanaOptions, VachanaSettings
from tests.chaos.fuzzing import Tally, fuzz_settings, tree
from tests.fakes.context import MemoryStepContext
from tests.fakes.sarvam import FakeSarvam, SarvamFakeConfig
from tests.fakes.scripted import ScriptedProvider
from tests.fakes.vachana import FakeVachana, VachanaFakeConfig

KEY = "FUZZ-KEY-0f4b7c1d9e"
ESCAPES = [
    "../../escape.txt",
    "/abs.txt",
    "a/../../b",
    "..",
    "",
    "a\x00b",
    "x" * 300,
    "a\\..\\..\\b",
    "é" * 200,
    "e\u0301cole",
    "CON",
    ".hidden",
    "~/x",
    "$(rm -rf /)",
]
WRONG = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.lists(st.integers(), max_size=3)
    | st.dictionaries(st.text(max_size=5), st.integers(), max_size=3)
)
SARVAM_ROUTES = {
    "init": ("POST", "/speech-to-text/job/v1"),
    "upload_files": ("POST", "/upload-files"),
    "start": ("POST", "/start"),
    "status": ("GET", "/status"),
    "download_files": ("POST", "/download-files"),
    "result_document": ("GET", "/outputs/"),
}
VACHANA_ROUTES = {"submit": ("POST", "/stt/v3/batch/submit"), "status": ("GET", "/stt/v3/batch/status/")}


@dataclass(frozen=True)
class Mutation:
    """How to spoil one JSON answer; ``pick`` chooses the spot among those available."""

    op: str  # delete | retype | extra | huge | escape
    pick: int
    value: Any = None

    def apply(self, doc: Any) -> Any:
        doc = json.loads(json.dumps(doc))
        spots = list(_spots(doc))
        if not spots:
            return self.value if self.op == "retype" else doc
        parent, key = spots[self.pick % len(spots)]
        if self.op == "delete" and isinstance(parent, dict):
            del parent[key]
        elif self.op == "extra":
            target = parent[key] if isinstance(parent[key], dict) else parent
            if isinstance(target, dict):
                target[f"unexpected_{self.pick}"] = self.value
        elif self.op == "huge":
            parent[key] = "H" * self.value
        elif self.op == "escape":
            parent[key] = self.value
        else:
            parent[key] = self.value
        return doc


def _spots(node: Any) -> Any:
    if isinstance(node, dict):
        for key, value in node.items():
            yield node, key
            yield from _spots(value)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield node, index
            yield from _spots(value)


MUTATIONS = st.one_of(
    st.builds(Mutation, st.just("delete"), st.integers(0, 10_000)),
    st.builds(Mutation, st.just("retype"), st.integers(0, 10_000), WRONG),
    st.builds(Mutation, st.just("extra"), st.integers(0, 10_000), WRONG),
    st.builds(Mutation, st.just("huge"), st.integers(0, 10_000), st.integers(10_000, 3_000_000)),
    st.builds(Mutation, st.just("escape"), st.integers(0, 10_000), st.sampled_from(ESCAPES)),
)


class Spoiling(httpx.AsyncBaseTransport):
    """Forwards to the fake and spoils the JSON answers of one route (once, or always)."""

    def __init__(
        self, inner: httpx.AsyncBaseTransport, route: tuple[str, str], mutation: Mutation, always: bool
    ) -> None:
        self._inner = inner
        self._route = route
        self._mutation = mutation
        self._always = always
        self.spoiled = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        method, fragment = self._route
        if request.method != method or fragment not in request.url.path or (self.spoiled and not self._always):
            return response
        body = await response.aread()
        try:
            doc = json.loads(body)
        except ValueError:
            return httpx.Response(response.status_code, headers=_plain(response.headers), content=body)
        self.spoiled += 1
        spoiled = json.dumps(self._mutation.apply(doc)).encode()
        return httpx.Response(response.status_code, headers=_plain(response.headers), content=spoiled)


def _plain(headers: httpx.Headers) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in ("content-length", "content-encoding")}


def _wav(path: Path) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes(b"\1\0" * 16_000)
    return path


async def run_job(provider: Any, batch: Batch) -> tuple[str, list[ItemResult]]:
    """Submit, poll and fetch as the dispatcher does (retryable errors retried a few times).
    Returns the outcome's name and the results. Only stenod errors may escape the plugin."""
    ctx = MemoryStepContext()
    for _ in range(4):
        try:
            handle = await provider.submit(batch, ctx)
            break
        except RetryableError:
            ctx = ctx.resumed()
    else:
        return "gave up retrying submit", []
    json.dumps(handle)  # handles are stored in the journal as JSON
    for _ in range(8):
        try:
            status = await provider.poll(handle)
        except RetryableError:
            continue
        if status.state not in (RemoteState.PENDING, RemoteState.RUNNING):
            break
    else:
        return "gave up polling", []
    if status.state is not RemoteState.DONE:
        assert status.error is None or (status.error.code and status.error.message)
        return f"job {status.state}", []
    for _ in range(4):
        try:
            return "results", list(await provider.fetch(handle))
        except RetryableError:
            continue
    return "gave up retrying fetch", []


def open_item(path: Path, item_id: str, out: Path) -> OpenItem:
    st_ = path.stat()
    return OpenItem(
        item_id=item_id,
        job_id="job1",
        state=ItemState.FETCHED,
        task="transcribe",
        provider="p",
        language=None,
        target_languages=(),
        options={},
        output=OutputSpec(dir=str(out)),
        input=str(path),
        name=path.name,
        path=str(path),
        size=st_.st_size,
        device=st_.st_dev,
        inode=st_.st_ino,
        result=None,
        created_at="2026-01-01T00:00:00Z",
        cancel_requested=False,
    )


def _write(results: list[ItemResult], item: OpenItem) -> list[str]:
    sink = FileSink(Path(item.output.dir or "") / "fallback")
    written: list[str] = []
    for result in results:
        if result.error is not None:
            written += [f.path for f in sink.write_error(item, result.error)]
        else:
            written += [f.path for f in sink.write_result(item, result)]
    return written


def _fuzz_provider(
    tmp: Path,
    name: str,
    make: Callable[[httpx.AsyncClient], Any],
    fake_app: Callable[[], Any],
    routes: dict[str, tuple[str, str]],
    options: Any,
) -> None:
    tally = Tally(f"provider answers/{name}")
    audio = _wav(tmp / "call.wav")
    out = tmp / "out"
    out.mkdir()
    before = tree(tmp)
    runner = asyncio.Runner()
    counter = iter(range(10**9))

    @fuzz_settings(120)
    @given(st.sampled_from(sorted(routes)), MUTATIONS, st.booleans())
    def check(route: str, mutation: Mutation, always: bool) -> None:
        transport = Spoiling(httpx.ASGITransport(app=fake_app()), routes[route], mutation, always)
        st_ = audio.stat()
        n = next(counter)
        batch = Batch(
            f"b{n}",
            Task.TRANSCRIBE,
            (BatchItem(f"i{n}", audio, audio.name, st_.st_size, 1.0, st_.st_dev, st_.st_ino),),
            "hi-IN",
            (),
            options,
        )

        async def go() -> tuple[str, list[ItemResult]]:
            async with httpx.AsyncClient(transport=transport, timeout=10) as http:
                return await run_job(make(http), batch)

        try:
            outcome, results = runner.run(go())
        except JobError as exc:
            assert exc.code and exc.message and KEY not in exc.message, exc
            tally.record(f"{route}: {type(exc).__name__} {exc.code}")
            return
        for result in results:
            assert result.error is None or (
                result.error.code and result.error.message and KEY not in result.error.message
            ), result.error
        for path in _write(results, open_item(audio, f"i{n}", out)):
            assert Path(path).resolve().parent == out.resolve(), path
        codes = sorted(
            {r.error.code for r in results if r.error}
            | ({"transcript"} if any(r.transcript for r in results) else set())
        )
        tally.record(f"{route}: {outcome} {'/'.join(codes)}".strip())

    try:
        check()
    finally:
        runner.close()
    tally.report()
    outside = {k: v for k, v in tree(tmp).items() if not k.startswith("out/")}
    assert outside == before  # nothing written beside the input or anywhere else


def test_spoiled_sarvam_answers_end_in_results_or_a_stenod_error(tmp_path: Path) -> None:
    settings = SarvamSettings(api_key=SecretStr(KEY), base_url="http://sarvam.test", request_timeout_seconds=10)
    _fuzz_provider(
        tmp_path,
        "sarvam",
        lambda http: SarvamProvider(settings, http),
        lambda: FakeSarvam(SarvamFakeConfig(api_key=KEY, polls_to_complete=1)).app,
        SARVAM_ROUTES,
        SarvamOptions(),
    )


def test_spoiled_vachana_answers_end_in_results_or_a_stenod_error(tmp_path: Path) -> None:
    settings = VachanaSettings(api_key=SecretStr(KEY), base_url="http://vachana.test", request_timeout_seconds=10)
    _fuzz_provider(
        tmp_path,
        "vachana",
        lambda http: VachanaProvider(settings, http),
        lambda: FakeVachana(VachanaFakeConfig(api_key=KEY, poll_interval_seconds=0, polls_to_complete=1)).app,
        VACHANA_ROUTES,
        VachanaOptions(),
    )


def _one_job(tmp: Path, provider: Any, fake: Any, route: tuple[str, str], mutation: Mutation) -> str:
    audio = _wav(tmp / "call.wav")
    st_ = audio.stat()
    batch = Batch(
        "b1",
        Task.TRANSCRIBE,
        (BatchItem("i1", audio, audio.name, st_.st_size, 1.0, st_.st_dev, st_.st_ino),),
        "hi-IN",
        (),
        provider[1],
    )

    async def go() -> str:
        transport = Spoiling(httpx.ASGITransport(app=fake), route, mutation, always=False)
        async with httpx.AsyncClient(transport=transport, timeout=10) as http:
            try:
                return (await run_job(provider[0](http), batch))[0]
            except JobError as exc:
                return f"{type(exc).__name__} {exc.code}"

    return asyncio.run(go())


def test_a_job_id_too_long_for_a_url_is_a_malformed_answer_not_a_crash(tmp_path: Path) -> None:
    settings = VachanaSettings(api_key=SecretStr(KEY), base_url="http://vachana.test", request_timeout_seconds=10)
    fake = FakeVachana(VachanaFakeConfig(api_key=KEY, poll_interval_seconds=0, polls_to_complete=1)).app
    outcome = _one_job(
        tmp_path,
        (lambda http: VachanaProvider(settings, http), VachanaOptions()),
        fake,
        VACHANA_ROUTES["submit"],
        Mutation("huge", 0, 70_000),
    )  # spot 0: job_id
    assert outcome == "gave up polling"  # each status call was a retryable malformed_response


def test_an_unusable_presigned_url_is_a_malformed_answer_not_a_crash(tmp_path: Path) -> None:
    settings = SarvamSettings(api_key=SecretStr(KEY), base_url="http://sarvam.test", request_timeout_seconds=10)
    fake = FakeSarvam(SarvamFakeConfig(api_key=KEY, polls_to_complete=1)).app
    url = "http://" + "b" * 70_000 + ".test/call.wav"
    outcome = _one_job(
        tmp_path,
        (lambda http: SarvamProvider(settings, http), SarvamOptions()),
        fake,
        SARVAM_ROUTES["upload_files"],
        Mutation("retype", 4, url),
    )  # spot 4: the file_url
    assert outcome == "results"  # the next attempt asked for fresh URLs and went on


@pytest.mark.parametrize("url", ["ftp://blob.test/out.json", "http://" + "b" * 70_000 + ".test/"])
async def test_a_url_httpx_cannot_request_is_a_retryable_malformed_answer(url: str) -> None:
    async with httpx.AsyncClient() as http:  # the real transport: it refuses before connecting
        with pytest.raises(RetryableError) as info, provider_http_errors("sarvam"):
            await http.get(url)
    assert info.value.code == "malformed_response" and "b" * 100 not in info.value.message


FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**6), 10**12).map(float)
SEGMENTS = st.lists(
    st.builds(
        Segment,
        FLOATS,
        FLOATS,
        st.text(max_size=50) | st.sampled_from(ESCAPES),
        st.none() | st.text(max_size=10) | st.sampled_from(ESCAPES),
        st.none() | FLOATS,
    ),
    max_size=6,
)
TRANSCRIPTS = st.builds(
    Transcript,
    st.text(max_size=200),
    st.none() | st.text(max_size=40),
    st.none() | FLOATS,
    SEGMENTS.map(tuple),
    st.none(),
    st.none() | st.sampled_from(ESCAPES),
    st.none() | st.sampled_from(ESCAPES),
)
DOCUMENTS = st.lists(
    st.builds(
        TranslatedDocument,
        st.sampled_from(ESCAPES) | st.text(max_size=40),
        st.binary(max_size=100),
        st.sampled_from(ESCAPES) | st.text(max_size=12),
    ),
    max_size=4,
)


@pytest.mark.filterwarnings("ignore:Overflow in SubRip timestamp")  # pysubs2 clamps cue times past 99:59:59
def test_whatever_a_provider_hands_the_writer_lands_in_the_output_folder_or_fails_cleanly(tmp_path: Path) -> None:
    tally = Tally("provider answers/results handed to the writer")
    out = tmp_path / "out"
    out.mkdir()
    audio = _wav(tmp_path / "call.wav")
    before = tree(tmp_path)
    counter = iter(range(10**9))

    @fuzz_settings(200)
    @given(
        st.sampled_from(ESCAPES) | st.text(min_size=1, max_size=60),
        TRANSCRIPTS | st.none(),
        DOCUMENTS,
        st.none() | st.builds(ErrorInfo, st.sampled_from(ESCAPES), st.text(max_size=80)),
    )
    def check(
        name: str, transcript: Transcript | None, documents: list[TranslatedDocument], error: ErrorInfo | None
    ) -> None:
        item = replace(open_item(audio, f"i{next(counter)}", out), name=name)
        result = ItemResult(item.item_id, transcript=transcript, documents=tuple(documents), error=error)
        try:
            written = _write([result], item)
        except OSError as exc:  # the dispatcher turns this into the item's output_failed error
            tally.record(f"refused by the file system: {exc.strerror}")
            return
        except (ValueError, OverflowError) as exc:
            pytest.fail(f"the writer raised {type(exc).__name__} ({exc}) for {result!r}")
        transcript_json = f"{safe_stem(name)}.json"  # a translated document may be any bytes, even named .json
        for path in written:
            assert Path(path).resolve().parent == out.resolve(), path
            if Path(path).name == transcript_json:
                json.loads(Path(path).read_text())
        tally.record("error file" if error else f"{len(written)} files")

    check()
    tally.report()
    assert {k: v for k, v in tree(tmp_path).items() if not k.startswith("out/")} == before
    assert not [p for p in out.rglob("*") if p.name.endswith(".stenod-tmp")]


@pytest.mark.parametrize("start, end", [(math.nan, 1.0), (0.0, math.inf), (0.0, 1e305), (-math.inf, 2.0)])
def test_nan_infinite_or_absurd_segment_times_still_give_all_four_outputs(
    tmp_path: Path, start: float, end: float
) -> None:
    """A provider's NaN, infinite or astronomically large time (valid JSON, e.g. 1e305) must not
    fail the item as an internal error, and the JSON output must stay parseable by strict
    readers (JSON has no NaN or Infinity)."""
    audio = _wav(tmp_path / "call.wav")
    item = open_item(audio, "i1", tmp_path)
    transcript = Transcript("hello", "en", end, (Segment(start, end, "hello"), Segment(1.0, 2.0, "world")))
    written = _write([ItemResult("i1", transcript=transcript)], item)
    assert sorted(Path(p).suffix for p in written) == [".json", ".srt", ".txt", ".vtt"]
    text = Path(next(p for p in written if p.endswith(".json"))).read_text()
    json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in the JSON output"))
    assert Path(next(p for p in written if p.endswith(".srt"))).read_text().count("-->") == 2


async def test_nan_in_a_providers_transcript_never_reaches_an_event(tmp_path: Path) -> None:
    audio = _wav(tmp_path / "call.wav")
    st_ = audio.stat()
    journal = SqliteJournal.open(tmp_path / "journal.db")
    provider = ScriptedProvider()
    provider.fetches.append(
        lambda: [
            ItemResult(
                provider.batches[-1].items[0].item_id,
                transcript=Transcript("hello", "en", math.nan, (Segment(math.nan, 1.0, "hello"),)),
            )
        ]
    )
    dispatcher = Dispatcher(
        journal,
        {"scripted": ProviderRuntime("scripted", provider, provider.limits, 0.0, 1)},
        FileSink(tmp_path / "results"),
        RetrySettings(max_attempts=1),
        probe=lambda p: None,
        pack_window_seconds=0.0,
        idle=asyncio.Event(),
    )
    try:
        await journal.create_job(
            NewJob(
                source="cli",
                task="transcribe",
                provider="scripted",
                language=None,
                target_languages=(),
                options={},
                output=OutputSpec(formats=("txt",)),
                items=[
                    NewItem(
                        input=str(audio),
                        name=audio.name,
                        path=str(audio),
                        size=st_.st_size,
                        device=st_.st_dev,
                        inode=st_.st_ino,
                    )
                ],
            )
        )
        stopping = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(dispatcher.run(stopping))
            async with asyncio.timeout(20):
                while not any(v.state.terminal for v in await journal.jobs(limit=10)):
                    await asyncio.sleep(0.05)
            stopping.set()
        bodies = [row.body for row in await journal.outbox_batch(100)]
    finally:
        journal.close()
    for body in bodies:
        json.loads(body, parse_constant=lambda name: pytest.fail(f"{name} in an event"))
