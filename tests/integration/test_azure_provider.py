"""The azure provider against the fake Translator over real sockets, with documents in
Azurite: the synchronous endpoint, the batch API, and resuming after a crash at every
batch step."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from stenod.provider import Batch, BatchItem, ItemResult, RemoteState, RetryableError, Task
from stenod_azure import AzureOptions, AzureSettings, AzureTranslatorProvider
from support.server import ThreadedServer, serve
from tests.fakes.azurite import Azurite
from tests.fakes.context import MemoryStepContext, SimulatedCrash
from tests.fakes.translator import DEFAULT_API_KEY, FakeTranslatorServer, docx_texts, make_docx

_containers = itertools.count(1)


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    with Azurite.start(tmp_path_factory.mktemp("azurite")) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def server(azurite: Azurite) -> Iterator[tuple[FakeTranslatorServer, ThreadedServer]]:
    fake = FakeTranslatorServer(blob_url=azurite.account_url)
    with serve(fake.app) as running:
        yield fake, running


@pytest.fixture
def fake(server: tuple[FakeTranslatorServer, ThreadedServer]) -> FakeTranslatorServer:
    httpx.post(f"{server[1].url}/__fake__/reset").raise_for_status()
    return server[0]


@pytest.fixture
def container(azurite: Azurite) -> tuple[str, str]:
    """A fresh container for this test: ``(name, SAS URL)``."""
    name = f"stenod-{next(_containers)}"
    return name, azurite.container_sas_url(name)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def provider(server, http, container: tuple[str, str] | None = None, **settings) -> AzureTranslatorProvider:
    config = AzureSettings(
        api_key=SecretStr(DEFAULT_API_KEY),
        base_url=server[1].url,
        region="westeurope",
        container_sas_url=SecretStr(container[1]) if container else None,
        **settings,
    )
    return AzureTranslatorProvider(config, http)


def batch_of(paths: list[Path], targets: tuple[str, ...] = ("fr", "de"), batch_id: str = "b1", **options) -> Batch:
    items = []
    for n, path in enumerate(paths):
        st = path.stat()
        items.append(BatchItem(f"item-{n}", path, path.name, st.st_size, device=st.st_dev, inode=st.st_ino))
    return Batch(batch_id, Task.TRANSLATE, tuple(items), "en", targets, AzureOptions(**options))


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def documents(result: ItemResult) -> dict[str, bytes]:
    return {d.language: d.content for d in result.documents}


async def finish(plugin: AzureTranslatorProvider, handle) -> list[ItemResult]:
    for _ in range(10):
        status = await plugin.poll(handle)
        if status.state is RemoteState.DONE:
            results = list(await plugin.fetch(handle))
            await plugin.release(handle)  # as the daemon does once the results are committed
            return results
    raise AssertionError(f"job did not finish: {status}")


@pytest.fixture
def three_documents(tmp_path: Path) -> list[Path]:
    return [
        write(tmp_path, "a.txt", b"first line\nsecond line\n"),
        write(tmp_path, "b.html", b'<html><body><p class="x">Hello</p></body></html>'),
        write(tmp_path, "c.docx", make_docx(["Title", "Body text"])),
    ]


# -- synchronous endpoint -------------------------------------------------------------------


async def test_sync_txt_is_translated_line_by_line_per_target(server, fake, http, tmp_path) -> None:
    doc = write(tmp_path, "notes.txt", b"hello\n\nworld")
    plugin = provider(server, http)
    handle = await plugin.submit(batch_of([doc]), MemoryStepContext())
    [result] = await finish(plugin, handle)
    assert documents(result) == {"fr": b"[fr] hello\n\n[fr] world", "de": b"[de] hello\n\n[de] world"}


async def test_sync_html_keeps_tags_and_translates_text_nodes(server, fake, http, tmp_path) -> None:
    doc = write(tmp_path, "page.html", b'<html><body><p class="x">Hello</p></body></html>')
    plugin = provider(server, http)
    [result] = await finish(plugin, await plugin.submit(batch_of([doc], ("fr",)), MemoryStepContext()))
    assert (result.documents[0].content, result.documents[0].extension) == (
        b'<html><body><p class="x">[fr] Hello</p></body></html>',
        "html",
    )


async def test_sync_docx_comes_back_as_docx_with_translated_runs(server, fake, http, tmp_path) -> None:
    doc = write(tmp_path, "letter.docx", make_docx(["Dear reader", "Regards"]))
    plugin = provider(server, http)
    [result] = await finish(plugin, await plugin.submit(batch_of([doc], ("fr",)), MemoryStepContext()))
    assert docx_texts(result.documents[0].content) == ["[fr] Dear reader", "[fr] Regards"]


async def test_sync_sends_one_call_per_target_language(server, fake, http, tmp_path) -> None:
    doc = write(tmp_path, "notes.txt", b"hello")
    await provider(server, http).submit(batch_of([doc], ("fr", "de", "it")), MemoryStepContext())
    assert fake.state.counters["translate_calls"] == 3


async def test_sync_resume_after_crash_does_not_pay_twice(server, fake, http, tmp_path) -> None:
    doc = write(tmp_path, "notes.txt", b"hello")
    batch = batch_of([doc])
    ctx = MemoryStepContext(crash_after_checkpoints=1)
    with pytest.raises(SimulatedCrash):
        await provider(server, http).submit(batch, ctx)
    plugin = provider(server, http)
    [result] = await finish(plugin, await plugin.submit(batch, ctx.resumed()))
    assert (fake.state.counters["translate_calls"], sorted(documents(result))) == (2, ["de", "fr"])


async def test_small_single_file_goes_sync_even_with_a_container(server, fake, http, tmp_path, container) -> None:
    doc = write(tmp_path, "notes.txt", b"hello")
    handle = await provider(server, http, container).submit(batch_of([doc]), MemoryStepContext())
    assert (handle["mode"], fake.state.counters.get("batches_created", 0)) == ("sync", 0)


async def test_regional_language_tags_are_sent_as_azure_codes(server, fake, http, tmp_path) -> None:
    doc = write(tmp_path, "notes.txt", b"hello")
    plugin = provider(server, http)
    [result] = await finish(plugin, await plugin.submit(batch_of([doc], ("hi-IN",)), MemoryStepContext()))
    assert documents(result) == {"hi-IN": b"[hi] hello"}


async def test_glossary_from_settings_is_applied(server, fake, http, tmp_path) -> None:
    doc = write(tmp_path, "notes.txt", b"stenod is here")
    terms = write(tmp_path, "terms.csv", b"stenod,STENOD\n")
    plugin = provider(server, http, glossaries={"brand": terms})
    handle = await plugin.submit(batch_of([doc], ("fr",), glossary="brand"), MemoryStepContext())
    [result] = await finish(plugin, handle)
    assert documents(result) == {"fr": b"[fr] STENOD is here"}


# -- batch API ------------------------------------------------------------------------------


async def test_batch_translates_every_document_into_every_language(
    server, fake, http, container, three_documents
) -> None:
    plugin = provider(server, http, container)
    results = await finish(plugin, await plugin.submit(batch_of(three_documents), MemoryStepContext()))
    txt, html, docx = results
    assert (
        documents(txt),
        documents(html)["de"],
        docx_texts(documents(docx)["fr"]),
        [d.extension for r in results for d in r.documents],
    ) == (
        {"fr": b"[fr] first line\n[fr] second line\n", "de": b"[de] first line\n[de] second line\n"},
        b'<html><body><p class="x">[de] Hello</p></body></html>',
        ["[fr] Title", "[fr] Body text"],
        ["txt", "txt", "html", "html", "docx", "docx"],
    )


async def test_batch_leaves_no_blobs_behind(server, fake, http, azurite, container, three_documents) -> None:
    plugin = provider(server, http, container)
    await finish(plugin, await plugin.submit(batch_of(three_documents), MemoryStepContext()))
    assert (fake.state.counters["batches_created"], azurite.blob_names(container[0])) == (1, [])


@pytest.mark.parametrize("link_key", ["nextLink", "@nextLink"])
async def test_batch_pages_through_document_statuses(server, fake, http, container, three_documents, link_key) -> None:
    fake.state.page_size, fake.state.next_link_key = 2, link_key
    plugin = provider(server, http, container)
    results = await finish(plugin, await plugin.submit(batch_of(three_documents), MemoryStepContext()))
    assert ([sorted(documents(r)) for r in results], fake.state.counters["documents_calls"]) == (
        [["de", "fr"]] * 3,
        3,
    )


async def test_batch_poll_returns_retry_after_and_progress(server, fake, http, container, three_documents) -> None:
    fake.state.retry_after = 7
    plugin = provider(server, http, container)
    handle = await plugin.submit(batch_of(three_documents), MemoryStepContext())
    first, second = await plugin.poll(handle), await plugin.poll(handle)
    assert (first.state, first.retry_after, first.progress, second.state, second.progress) == (
        RemoteState.RUNNING,
        7.0,
        0.0,
        RemoteState.DONE,
        1.0,
    )


async def test_batch_request_has_one_unique_target_folder_per_language(
    server, fake, http, container, three_documents
) -> None:
    await provider(server, http, container).submit(batch_of(three_documents), MemoryStepContext())
    [request] = fake.state.requests
    targets = request["inputs"][0]["targets"]
    folders = [t["targetUrl"].split("?")[0].rsplit("/", 2)[-2:] for t in targets]
    assert (folders, [t["language"] for t in targets]) == ([["out", "fr"], ["out", "de"]], ["fr", "de"])


async def test_batch_handle_and_checkpoints_hold_no_sas(server, fake, http, container, three_documents) -> None:
    ctx = MemoryStepContext()
    handle = await provider(server, http, container).submit(batch_of(three_documents), ctx)
    stored = json.dumps([handle, *ctx.checkpoints])
    assert ("sig=" in stored, container[1].split("?")[1] in stored) == (False, False)


@pytest.mark.parametrize("crash_after", [1, 2, 3], ids=["uploaded", "starting", "started"])
async def test_crash_at_each_batch_step_creates_one_batch_and_no_orphans(
    server, fake, http, azurite, container, three_documents, crash_after
) -> None:
    batch = batch_of(three_documents, batch_id=f"crash-{crash_after}")
    ctx = MemoryStepContext(crash_after_checkpoints=crash_after)
    with pytest.raises(SimulatedCrash):
        await provider(server, http, container).submit(batch, ctx)
    plugin = provider(server, http, container)
    results = await finish(plugin, await plugin.submit(batch, ctx.resumed()))
    assert (
        fake.state.batches_by_prefix,
        [sorted(documents(r)) for r in results],
        azurite.blob_names(container[0]),
    ) == ({f"stenod/crash-{crash_after}/in/": 1}, [["de", "fr"]] * 3, [])


async def test_lost_start_answer_is_recovered_without_a_second_batch(
    server, fake, http, container, three_documents
) -> None:
    fake.state.drop_start_answers = 1
    plugin = provider(server, http, container)
    batch = batch_of(three_documents, batch_id="lost-answer")
    ctx = MemoryStepContext()
    with pytest.raises(RetryableError):
        await plugin.submit(batch, ctx)
    handle = await plugin.submit(batch, ctx.resumed())
    assert (fake.state.counters["batches_created"], handle["job_id"]) == (1, next(iter(fake.state.jobs)))


async def test_cancel_stops_the_job_and_removes_its_blobs(
    server, fake, http, azurite, container, three_documents
) -> None:
    fake.state.polls_until_done = 1000
    plugin = provider(server, http, container)
    handle = await plugin.submit(batch_of(three_documents), MemoryStepContext())
    await plugin.poll(handle)
    await plugin.cancel(handle)
    status = await plugin.poll(handle)
    assert (fake.state.counters["cancel_calls"], status.state, azurite.blob_names(container[0])) == (
        1,
        RemoteState.CANCELLED,
        [],
    )


async def test_cancel_of_a_finished_job_is_harmless(server, fake, http, container, three_documents) -> None:
    plugin = provider(server, http, container)
    handle = await plugin.submit(batch_of(three_documents), MemoryStepContext())
    await finish(plugin, handle)
    await plugin.cancel(handle)
    assert fake.state.jobs[handle["job_id"]].status == "Succeeded"


async def test_large_single_file_goes_to_the_batch_api(server, fake, http, container, tmp_path) -> None:
    doc = write(tmp_path, "big.txt", b"line\n" * 3000)
    plugin = provider(server, http, container, sync_max_bytes=10_000)
    handle = await plugin.submit(batch_of([doc], ("fr",)), MemoryStepContext())
    [result] = await finish(plugin, handle)
    assert (handle["mode"], documents(result)["fr"][:10]) == ("batch", b"[fr] line\n")


async def test_pdf_goes_to_the_batch_api(server, fake, http, container, tmp_path) -> None:
    doc = write(tmp_path, "scan.pdf", b"%PDF-1.4 fake")
    handle = await provider(server, http, container).submit(batch_of([doc], ("fr",)), MemoryStepContext())
    assert handle["mode"] == "batch"


async def test_batch_glossary_is_uploaded_and_applied(server, fake, http, container, tmp_path) -> None:
    docs = [write(tmp_path, "a.txt", b"stenod one"), write(tmp_path, "b.txt", b"stenod two")]
    terms = write(tmp_path, "terms.csv", b"stenod,STENOD\n")
    plugin = provider(server, http, container, glossaries={"brand": terms})
    handle = await plugin.submit(batch_of(docs, ("fr",), glossary="brand"), MemoryStepContext())
    results = await finish(plugin, handle)
    assert [documents(r)["fr"] for r in results] == [b"[fr] STENOD one", b"[fr] STENOD two"]
