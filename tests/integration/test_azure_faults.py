"""Every Azure Translator and Blob Storage fault ends in the right state or error class,
with Azure's code and message where it gave one."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from stenod.provider import AuthError, Batch, BatchItem, PermanentError, RemoteState, RetryableError, Task
from stenod_azure import AzureOptions, AzureSettings, AzureTranslatorProvider
from support.server import ThreadedServer, serve
from tests.fakes.azurite import Azurite
from tests.fakes.context import MemoryStepContext
from tests.fakes.translator import DEFAULT_API_KEY, FakeTranslatorServer, make_docx

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
    name = f"faults-{next(_containers)}"
    return name, azurite.container_sas_url(name)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def docs(tmp_path: Path) -> list[Path]:
    files = {"a.txt": b"alpha", "b.html": b"<p>beta</p>", "c.docx": make_docx(["gamma"])}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return [tmp_path / name for name in files]


def provider(server, http, container=None, key: str = DEFAULT_API_KEY, **settings) -> AzureTranslatorProvider:
    config = AzureSettings(
        api_key=SecretStr(key),
        base_url=server[1].url,
        container_sas_url=SecretStr(container[1]) if container else None,
        **settings,
    )
    return AzureTranslatorProvider(config, http)


def batch_of(paths: list[Path], targets: tuple[str, ...] = ("fr",), **options) -> Batch:
    items = []
    for n, path in enumerate(paths):
        st = path.stat()
        items.append(BatchItem(f"item-{n}", path, path.name, st.st_size, device=st.st_dev, inode=st.st_ino))
    return Batch("faulty", Task.TRANSLATE, tuple(items), None, targets, AzureOptions(**options))


def load(server, *rules: dict[str, Any]) -> None:
    httpx.post(f"{server[1].url}/__fake__/faults", json=list(rules)).raise_for_status()


async def poll_until_terminal(plugin: AzureTranslatorProvider, handle):
    for _ in range(10):
        status = await plugin.poll(handle)
        if status.state not in (RemoteState.PENDING, RemoteState.RUNNING):
            return status
    raise AssertionError("job never ended")


async def test_wrong_key_on_sync_is_an_auth_error(server, fake, http, docs) -> None:
    with pytest.raises(AuthError, match=r"providers\.azure\] api_key"):
        await provider(server, http, key="wrong").submit(batch_of(docs[:1]), MemoryStepContext())


async def test_wrong_key_on_batch_start_is_an_auth_error(server, fake, http, container, docs) -> None:
    with pytest.raises(AuthError):
        await provider(server, http, container, key="wrong").submit(batch_of(docs), MemoryStepContext())


async def test_read_only_container_sas_is_an_auth_error_naming_the_setting(server, fake, http, azurite, docs) -> None:
    read_only = ("ro", azurite.container_sas_url("read-only", permission="rl"))
    with pytest.raises(AuthError, match="container_sas_url"):
        await provider(server, http, read_only).submit(batch_of(docs), MemoryStepContext())


async def test_rate_limited_start_is_retryable_with_retry_after(server, fake, http, container, docs) -> None:
    load(server, {"route": "start", "status": 429, "retry_after": 9})
    with pytest.raises(RetryableError) as info:
        await provider(server, http, container).submit(batch_of(docs), MemoryStepContext())
    assert (info.value.retry_after, info.value.code) == (9.0, "RequestRateTooHigh")


@pytest.mark.parametrize(
    ("rule", "code"),
    [
        ({"status": 503}, "ServiceUnavailable"),
        ({"status": 500}, "InternalServerError"),
        ({"malformed": True}, "malformed_response"),
        ({"reset": True}, "network"),
    ],
    ids=["503", "500", "malformed-json", "reset"],
)
async def test_status_faults_are_retryable(server, fake, http, container, docs, rule, code) -> None:
    plugin = provider(server, http, container)
    handle = await plugin.submit(batch_of(docs), MemoryStepContext())
    load(server, {"route": "status", **rule})
    with pytest.raises(RetryableError) as info:
        await plugin.poll(handle)
    assert info.value.code == code


async def test_slow_status_is_a_retryable_timeout(server, fake, http, container, docs) -> None:
    plugin = provider(server, http, container, request_timeout_seconds=0.3)
    handle = await plugin.submit(batch_of(docs), MemoryStepContext())
    load(server, {"route": "status", "delay": 2.0})
    with pytest.raises(RetryableError) as info:
        await plugin.poll(handle)
    assert info.value.code == "timeout"


async def test_document_listing_fault_is_retryable_and_fetch_can_be_repeated(
    server, fake, http, container, docs
) -> None:
    plugin = provider(server, http, container)
    handle = await plugin.submit(batch_of(docs), MemoryStepContext())
    await poll_until_terminal(plugin, handle)
    load(server, {"route": "documents", "status": 500})
    with pytest.raises(RetryableError):
        await plugin.fetch(handle)
    results = await plugin.fetch(handle)
    assert [r.error for r in results] == [None, None, None]


async def test_validation_failure_fails_the_job_with_azures_code_and_cleans_up(
    server, fake, http, azurite, container, docs
) -> None:
    fake.state.validation_failure = {"code": "InvalidDocumentAccessLevel", "message": "Cannot access source."}
    plugin = provider(server, http, container)
    status = await poll_until_terminal(plugin, await plugin.submit(batch_of(docs), MemoryStepContext()))
    assert (status.state, status.error.code, "Cannot access source." in status.error.message) == (
        RemoteState.FAILED,
        "InvalidDocumentAccessLevel",
        True,
    )
    assert azurite.blob_names(container[0]) == []


async def test_failed_document_fails_only_its_item(server, fake, http, container, docs) -> None:
    fake.state.fail_documents = ["b.html"]
    plugin = provider(server, http, container)
    handle = await plugin.submit(batch_of(docs), MemoryStepContext())
    status = await poll_until_terminal(plugin, handle)
    results = await plugin.fetch(handle)
    assert (status.state, [r.error.code if r.error else None for r in results]) == (
        RemoteState.DONE,
        [None, "TranslationFailed", None],
    )


async def test_failed_document_error_names_file_and_language(server, fake, http, container, docs) -> None:
    fake.state.fail_documents = ["b.html"]
    plugin = provider(server, http, container)
    handle = await plugin.submit(batch_of(docs), MemoryStepContext())
    await poll_until_terminal(plugin, handle)
    results = await plugin.fetch(handle)
    assert results[1].error is not None
    assert results[1].error.message == (
        "Azure could not translate b.html to fr (TranslationFailed): Injected failure for b.html."
    )


async def test_job_whose_documents_all_failed_reports_each_item(server, fake, http, container, docs) -> None:
    fake.state.fail_all_documents = True
    plugin = provider(server, http, container)
    handle = await plugin.submit(batch_of(docs), MemoryStepContext())
    status = await poll_until_terminal(plugin, handle)
    results = await plugin.fetch(handle)
    assert (status.state, [bool(r.error) for r in results]) == (RemoteState.DONE, [True, True, True])


async def test_sync_refusal_fails_the_item_with_azures_code(server, fake, http, docs) -> None:
    load(server, {"route": "translate", "status": 400, "code": "InvalidArgument", "message": "bad doc"})
    plugin = provider(server, http)
    [result] = await plugin.fetch(await plugin.submit(batch_of(docs[:1]), MemoryStepContext()))
    assert result.error is not None
    assert (result.error.code, "bad doc" in result.error.message, result.documents) == (
        "InvalidArgument",
        True,
        (),
    )


async def test_sync_rate_limit_is_retryable_not_an_item_failure(server, fake, http, docs) -> None:
    load(server, {"route": "translate", "status": 429, "retry_after": 4})
    with pytest.raises(RetryableError) as info:
        await provider(server, http).submit(batch_of(docs[:1]), MemoryStepContext())
    assert info.value.retry_after == 4.0


async def test_without_a_container_batch_only_formats_are_refused(server, fake, http, tmp_path) -> None:
    pdf = tmp_path / "scan.pdf"
    pdf.write_bytes(b"%PDF-1.4")
    plugin = provider(server, http)
    [result] = await plugin.fetch(await plugin.submit(batch_of([pdf]), MemoryStepContext()))
    assert result.error is not None
    assert ("pdf" in plugin.limits.formats, result.error.code) == (False, "needs_batch_api")


async def test_unknown_glossary_is_permanent(server, fake, http, docs) -> None:
    with pytest.raises(PermanentError, match="unknown glossary 'brand'"):
        await provider(server, http).submit(batch_of(docs[:1], glossary="brand"), MemoryStepContext())


async def test_more_than_ten_targets_is_permanent(server, fake, http, docs) -> None:
    targets = tuple(f"l{n}" for n in range(11))
    with pytest.raises(PermanentError) as info:
        await provider(server, http).submit(batch_of(docs[:1], targets), MemoryStepContext())
    assert info.value.code == "too_many_targets"
