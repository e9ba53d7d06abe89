"""Azure AI Translator's Document Translation REST API (``{endpoint}/translator/document…``).

Both ways the service offers: the synchronous single-document endpoint and the batch
API (start, status, list jobs, list document statuses, cancel).
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

from stenod.provider import (
    FileUpload,
    Json,
    MultipartBody,
    PermanentError,
    RetryableError,
    provider_http_errors,
    retry_after_seconds,
)

from .errors import NAME, raise_for_translator

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class TranslatorApi:
    """Thin async client over the shared ``httpx.AsyncClient``."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        endpoint: str,
        api_key: str,
        *,
        region: str | None,
        api_version: str,
        timeout: float,
    ) -> None:
        self._http = http
        self._base = endpoint.rstrip("/") + "/translator"
        self._origin = _origin(endpoint)
        self._headers = {"Ocp-Apim-Subscription-Key": api_key}
        if region:
            self._headers["Ocp-Apim-Subscription-Region"] = region
        self._version = api_version
        self._timeout = timeout

    async def translate(
        self,
        document: FileUpload,
        *,
        target: str,
        source: str | None,
        category: str | None,
        glossary: FileUpload | None,
    ) -> bytes:
        """Translate one document synchronously; returns the translated file."""
        params = {"targetLanguage": target}
        if source:
            params["sourceLanguage"] = source
        if category:
            params["category"] = category
        files = [("document", document)] + ([("glossary", glossary)] if glossary is not None else [])
        form = MultipartBody([], files)
        response = await self._request(
            "POST", "/document:translate", params=params, content=form.stream(), headers=form.headers
        )
        return response.content

    async def start(self, body: Mapping[str, Json]) -> str:
        """Start a batch; returns the job id from ``Operation-Location``."""
        response = await self._request("POST", "/document/batches", json=body)
        location = response.headers.get("operation-location", "")
        ids = _UUID.findall(urlsplit(location).path)
        if not ids:
            raise RetryableError("azure accepted the batch but sent no job id", code="malformed_response")
        return str(ids[-1]).lower()

    async def status(self, job_id: str) -> tuple[Mapping[str, Json], float | None]:
        """A batch's ``TranslationStatus`` and the Retry-After it came with."""
        response = await self._request("GET", f"/document/batches/{job_id}")
        return _object(response), retry_after_seconds(response)

    async def cancel(self, job_id: str) -> None:
        """Cancel a batch; one that already finished (400) or is unknown (404) is fine."""
        response = await self._request("DELETE", f"/document/batches/{job_id}", ok=(400, 404))
        del response

    def jobs_since(self, created_from: str) -> AsyncGenerator[Mapping[str, Json], None]:
        """Every batch created at or after ``created_from`` (ISO 8601), newest first."""
        return self._pages("/document/batches", {"createdDateTimeUtcStart": created_from})

    def documents(self, job_id: str, *, page_size: int | None = None) -> AsyncGenerator[Mapping[str, Json], None]:
        """Every ``DocumentStatus`` of a batch, following the service's next-page links."""
        params = {"maxpagesize": str(page_size)} if page_size else {}
        return self._pages(f"/document/batches/{job_id}/documents", params)

    async def _pages(self, path: str, params: Mapping[str, str]) -> AsyncGenerator[Mapping[str, Json], None]:
        url: str | None = self._base + path
        query: Mapping[str, str] | None = params
        while url:
            response = await self._request("GET", url, params=query)
            page = _object(response)
            values = page.get("value")
            if not isinstance(values, list):
                raise RetryableError("azure sent a page without a value list", code="malformed_response")
            for value in values:
                if isinstance(value, Mapping):
                    yield value
            link = page.get("nextLink") or page.get("@nextLink")
            url, query = (self._next_url(link), None) if isinstance(link, str) and link else (None, None)

    def _next_url(self, link: str) -> str:
        """The next-page link, verbatim, after checking it stays on our endpoint (the
        key goes with it) and carries the api-version."""
        if _origin(link) != self._origin:
            raise PermanentError("azure sent a next-page link to another host; refusing to follow it")
        parts = urlsplit(link)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        query.setdefault("api-version", self._version)
        return urlunsplit(parts._replace(query=urlencode(query)))

    async def _request(
        self, method: str, path_or_url: str, *, ok: tuple[int, ...] = (), **kwargs: Any
    ) -> httpx.Response:
        url = path_or_url if path_or_url.startswith(("http://", "https://")) else self._base + path_or_url
        params = dict(kwargs.pop("params", None) or {})
        if "api-version=" not in url:
            params["api-version"] = self._version
        headers = {**self._headers, **kwargs.pop("headers", {})}
        with provider_http_errors(NAME):
            response = await self._http.request(
                method, url, params=params or None, headers=headers, timeout=self._timeout, **kwargs
            )
        if response.status_code not in ok:
            raise_for_translator(response)
        return response


def _object(response: httpx.Response) -> Mapping[str, Json]:
    with provider_http_errors(NAME):
        body = response.json()
    if not isinstance(body, Mapping):
        raise RetryableError("azure sent a JSON answer of the wrong shape", code="malformed_response")
    return body


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()
