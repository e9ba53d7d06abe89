"""The official ``azure-ai-translation-document`` SDK drives the fake Translator, with
documents in Azurite: the fake passes only if it speaks the real protocol.

Transport: the fake is served over plain http. The SDK's key credential policy
(``AzureKeyCredentialPolicy``) does not insist on https (only the Entra bearer-token
policy does), so no certificate is needed; the SDK is used exactly as a user would.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from azure.ai.translation.document import DocumentTranslationClient, SingleDocumentTranslationClient
from azure.ai.translation.document.models import DocumentTranslateContent
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

from support.server import ThreadedServer, serve
from tests.fakes.azurite import Azurite
from tests.fakes.translator import DEFAULT_API_KEY, FakeTranslatorServer

API_VERSIONS = [None, "2024-05-01"]  # None: the SDK's own default (2026-03-01)


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
def endpoint(server: tuple[FakeTranslatorServer, ThreadedServer]) -> str:
    return server[1].url


def client(endpoint: str, api_version: str | None, key: str = DEFAULT_API_KEY) -> DocumentTranslationClient:
    kwargs = {"api_version": api_version} if api_version else {}
    return DocumentTranslationClient(endpoint, AzureKeyCredential(key), polling_interval=0, **kwargs)


def upload(azurite: Azurite, container: str, files: dict[str, bytes]) -> str:
    url = azurite.container_sas_url(container)
    blobs = azurite.service.get_container_client(container)
    for name, data in files.items():
        blobs.upload_blob(name, data, overwrite=True)
    return url


@pytest.mark.parametrize("api_version", API_VERSIONS)
def test_sdk_batch_translation_lands_in_the_target_container(fake, endpoint, azurite, api_version) -> None:
    tag = api_version or "default"
    source = upload(azurite, f"src-{tag}", {"notes/a.txt": b"hello\nworld", "notes/b.html": b"<p>Hi</p>"})
    target = azurite.container_sas_url(f"fr-{tag}")
    with client(endpoint, api_version) as sdk:
        poller = sdk.begin_translation(source, target, "fr")
        statuses = list(poller.result())
    translated = azurite.read(f"fr-{tag}", "notes/a.txt")
    assert (sorted((s.status, s.translated_to) for s in statuses), translated) == (
        [("Succeeded", "fr"), ("Succeeded", "fr")],
        b"[fr] hello\n[fr] world",
    )


def test_sdk_poller_reports_the_job_details(fake, endpoint, azurite) -> None:
    source = upload(azurite, "src-details", {"a.txt": b"one"})
    with client(endpoint, None) as sdk:
        poller = sdk.begin_translation(source, azurite.container_sas_url("out-details"), "de")
        poller.result()
        details = poller.details
    assert (details.status, details.documents_total_count, details.documents_succeeded_count) == (
        "Succeeded",
        1,
        1,
    )


def test_sdk_follows_next_links_through_every_page(fake, endpoint, azurite) -> None:
    fake.state.page_size = 2
    files = {f"doc{n}.txt": f"text {n}".encode() for n in range(5)}
    source = upload(azurite, "src-paged", files)
    with client(endpoint, None) as sdk:
        poller = sdk.begin_translation(source, azurite.container_sas_url("out-paged"), "es")
        poller.result()
        listed = list(sdk.list_document_statuses(poller.id))
    assert sorted(s.source_document_url.rsplit("/", 1)[-1] for s in listed) == sorted(files)


def test_sdk_lists_translations(fake, endpoint, azurite) -> None:
    source = upload(azurite, "src-list", {"a.txt": b"one"})
    with client(endpoint, "2024-05-01") as sdk:
        poller = sdk.begin_translation(source, azurite.container_sas_url("out-list"), "it")
        poller.result()
        ids = [t.id for t in sdk.list_translation_statuses()]
    assert ids == [poller.id]


def test_sdk_cancels_a_running_translation(fake, endpoint, azurite) -> None:
    fake.state.polls_until_done = 1000
    source = upload(azurite, "src-cancel", {"a.txt": b"one"})
    with client(endpoint, None) as sdk:
        poller = sdk.begin_translation(source, azurite.container_sas_url("out-cancel"), "fr")
        sdk.cancel_translation(poller.id)
        poller.wait()
        status = sdk.get_translation_status(poller.id)
    # The SDK respells the wire value "Cancelled" as "Canceled".
    assert (status.status, status.documents_canceled_count) == ("Canceled", 1)


def test_sdk_surfaces_validation_failure_with_azure_code(fake, endpoint, azurite) -> None:
    source = azurite.container_sas_url("src-empty")
    with client(endpoint, None) as sdk, pytest.raises(HttpResponseError) as info:
        sdk.begin_translation(source, azurite.container_sas_url("out-empty"), "fr").result()
    assert info.value.error is not None and info.value.error.code == "NoTranslatableDocuments"


def test_sdk_rejects_a_wrong_key(fake, endpoint, azurite) -> None:
    with client(endpoint, None, key="wrong") as sdk, pytest.raises(ClientAuthenticationError):
        sdk.get_supported_document_formats()


def test_sdk_reads_supported_formats(fake, endpoint) -> None:
    with client(endpoint, "2024-05-01") as sdk:
        formats = {f.file_format for f in sdk.get_supported_document_formats()}
    assert {"PlainText", "OpenXmlWord", "HtmlFile"} <= formats


@pytest.mark.parametrize("api_version", API_VERSIONS)
def test_sdk_single_document_translation_returns_the_translated_file(fake, endpoint, api_version) -> None:
    kwargs = {"api_version": api_version} if api_version else {}
    with SingleDocumentTranslationClient(endpoint, AzureKeyCredential(DEFAULT_API_KEY), **kwargs) as sdk:
        content = DocumentTranslateContent(document=("note.txt", b"good morning", "text/plain"))
        translated = sdk.translate(body=content, target_language="hi")
    assert (translated if isinstance(translated, bytes) else b"".join(translated)) == b"[hi] good morning"


def test_sdk_single_document_with_glossary_applies_it(fake, endpoint) -> None:
    with SingleDocumentTranslationClient(endpoint, AzureKeyCredential(DEFAULT_API_KEY)) as sdk:
        content = DocumentTranslateContent(
            document=("note.txt", b"stenod rocks", "text/plain"),
            glossary=[("terms.csv", b"stenod,STENOD", "text/csv")],
        )
        translated = sdk.translate(body=content, target_language="fr")
    assert (translated if isinstance(translated, bytes) else b"".join(translated)) == b"[fr] STENOD rocks"
