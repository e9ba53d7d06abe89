"""Pieces of the azure provider that need no server: URL handling, language codes,
error envelopes."""

from __future__ import annotations

import re

import httpx
import pytest

from stenod.provider import AuthError, PermanentError, RetryableError
from stenod_azure.api import TranslatorApi
from stenod_azure.batch import blob_root
from stenod_azure.blobs import BlobContainer
from stenod_azure.errors import raise_for_storage, raise_for_translator, translation_error
from stenod_azure.request import azure_language

ENDPOINT = "https://res.cognitiveservices.azure.com"
SAS = "https://acct.blob.core.windows.net/docs?sv=2024-01-01&sig=SECRET"


def api(handler) -> TranslatorApi:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return TranslatorApi(http, ENDPOINT, "key", region=None, api_version="2024-05-01", timeout=5)


@pytest.mark.parametrize(
    "location",
    [
        f"{ENDPOINT}/translator/document/batches/9dce0aa9-78dc-41ba-8cae-2e2f3c2ff8ec?api-version=2024-05-01",
        f"{ENDPOINT}/translator/text/batch/v1.1/batches/9DCE0AA9-78DC-41BA-8CAE-2E2F3C2FF8EC",
    ],
    ids=["document-layout", "v1.1-layout"],
)
async def test_job_id_is_the_last_uuid_of_operation_location(location: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(202, headers={"Operation-Location": location})

    assert await api(handler).start({"inputs": []}) == "9dce0aa9-78dc-41ba-8cae-2e2f3c2ff8ec"


async def test_next_link_to_another_host_is_not_followed() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.host)
        return httpx.Response(200, json={"value": [{"id": "1"}], "nextLink": "https://evil.example/steal"})

    with pytest.raises(PermanentError):
        _ = [doc async for doc in api(handler).documents("job")]
    assert seen == ["res.cognitiveservices.azure.com"]


async def test_next_link_gets_the_api_version_when_it_lacks_one() -> None:
    queries: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        queries.append(request.url.query.decode())
        link = f"{ENDPOINT}/translator/document/batches/job/documents?skip=1" if len(queries) == 1 else None
        return httpx.Response(200, json={"value": [{"id": str(len(queries))}], "@nextLink": link})

    ids = [doc["id"] async for doc in api(handler).documents("job")]
    assert (ids, queries[1]) == (["1", "2"], "skip=1&api-version=2024-05-01")


@pytest.mark.parametrize(
    ("tag", "code"),
    [
        ("hi-IN", "hi"),
        ("fr", "fr"),
        ("pt-BR", "pt-BR"),
        ("zh-Hans", "zh-Hans"),
        ("en-US", "en"),
        ("fr-CA", "fr-CA"),
    ],
)
def test_language_tags_become_azure_codes(tag: str, code: str) -> None:
    assert azure_language(tag) == code


def test_blob_urls_inside_the_container_map_to_names() -> None:
    container = BlobContainer(httpx.AsyncClient(), SAS, 5)
    assert (
        container.name_of("https://acct.blob.core.windows.net/docs/stenod/b/in/0000/a%20b.txt"),
        container.name_of("https://acct.blob.core.windows.net/other/x.txt"),
        container.name_of("https://evil.example/docs/x.txt"),
    ) == ("stenod/b/in/0000/a b.txt", None, None)


def test_container_url_without_sas_is_refused() -> None:
    with pytest.raises(PermanentError):
        BlobContainer(httpx.AsyncClient(), "https://acct.blob.core.windows.net/docs", 5)


def test_batch_ids_with_odd_characters_get_distinct_safe_folders() -> None:
    odd, plain = blob_root("01JD/x y"), blob_root("01JD_x_y")
    assert (re.fullmatch(r"stenod/[A-Za-z0-9_-]+", odd) is not None, odd != plain, plain) == (
        True,
        True,
        "stenod/01JD_x_y",
    )


def test_inner_error_is_preferred_for_its_specific_code() -> None:
    error = {
        "code": "InvalidRequest",
        "message": "outer",
        "innerError": {"code": "NoTranslatableDocuments", "message": "inner"},
    }
    assert translation_error(error) == ("NoTranslatableDocuments", "inner")


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (401, AuthError),
        (429, RetryableError),
        (503, RetryableError),
        (400, PermanentError),
        (404, PermanentError),
    ],
)
def test_translator_status_codes_map_to_error_classes(status: int, error: type[Exception]) -> None:
    body = {"error": {"code": "X", "message": "m"}}
    with pytest.raises(error):
        raise_for_translator(httpx.Response(status, json=body))


def test_storage_errors_never_echo_the_request_url() -> None:
    response = httpx.Response(
        403,
        headers={"x-ms-error-code": "AuthenticationFailed"},
        text="<Error><Code>AuthenticationFailed</Code><Message>Server failed.\nsig=SECRET</Message></Error>",
        request=httpx.Request("PUT", f"{SAS}&x=1"),
    )
    with pytest.raises(AuthError) as info:
        raise_for_storage(response, "upload a.txt")
    assert "SECRET" not in str(info.value)
