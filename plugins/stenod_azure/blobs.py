"""A Blob Storage container reached through a container SAS URL, over plain httpx.

Only what the batch flow needs: Put Blob (streamed), Get Blob, Delete Blob, List Blobs.
The SAS URL is a credential: it is kept here and never leaves in a handle, checkpoint
or error message.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from urllib.parse import quote, unquote, urlsplit

import httpx

from stenod.provider import FileUpload, PermanentError, RetryableError, file_chunks, provider_http_errors

from .errors import NAME, raise_for_storage

STORAGE_VERSION = "2023-11-03"


class BlobContainer:
    """One container; blob names are relative to it."""

    def __init__(self, http: httpx.AsyncClient, sas_url: str, timeout: float) -> None:
        parts = urlsplit(sas_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or not parts.query:
            raise PermanentError(
                "[providers.azure] container_sas_url must be a Blob container URL with a SAS query",
                code="bad_container_url",
            )
        self._http = http
        self._timeout = timeout
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._path = parts.path.rstrip("/")
        self._sas = parts.query
        self._headers = {"x-ms-version": STORAGE_VERSION}

    @property
    def sas_url(self) -> str:
        """The container's SAS URL (for Azure's own use in a batch request)."""
        return f"{self._origin}{self._path}?{self._sas}"

    def folder_sas_url(self, folder: str) -> str:
        """A SAS URL naming a virtual folder of the container (a batch target)."""
        return f"{self._origin}{self._path}/{quote(folder.strip('/'), safe='/')}?{self._sas}"

    def blob_sas_url(self, name: str) -> str:
        return f"{self._origin}{self._path}/{quote(name, safe='/')}?{self._sas}"

    def name_of(self, url: str) -> str | None:
        """The blob name of ``url`` if it points into this container, else None."""
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}".lower() != self._origin.lower():
            return None
        path = unquote(parts.path)
        prefix = unquote(self._path) + "/"
        return path[len(prefix) :] if path.startswith(prefix) else None

    async def put(self, name: str, upload: FileUpload) -> None:
        """Upload a block blob, streaming the file (read in a worker thread)."""
        headers = {**self._headers, "x-ms-blob-type": "BlockBlob", **upload.headers}
        with provider_http_errors(NAME):
            response = await self._http.put(
                self.blob_sas_url(name), content=file_chunks(upload), headers=headers, timeout=self._timeout
            )
        raise_for_storage(response, f"upload {name.rsplit('/', 1)[-1]}")

    async def get(self, name: str) -> bytes:
        """Download a blob. Raises PermanentError if it does not exist."""
        with provider_http_errors(NAME):
            response = await self._http.get(self.blob_sas_url(name), headers=self._headers, timeout=self._timeout)
        raise_for_storage(response, f"download {name.rsplit('/', 1)[-1]}")
        return response.content

    async def delete(self, name: str) -> None:
        """Delete a blob; a blob that is already gone is fine."""
        with provider_http_errors(NAME):
            response = await self._http.delete(self.blob_sas_url(name), headers=self._headers, timeout=self._timeout)
        if response.status_code != 404:
            raise_for_storage(response, f"delete {name.rsplit('/', 1)[-1]}")

    async def list(self, prefix: str) -> list[str]:
        """Names of every blob under ``prefix`` (follows ``NextMarker``)."""
        names: list[str] = []
        marker = ""
        while True:
            query = f"restype=container&comp=list&prefix={quote(prefix, safe='')}"
            if marker:
                query += f"&marker={quote(marker, safe='')}"
            with provider_http_errors(NAME):
                response = await self._http.get(
                    f"{self._origin}{self._path}?{query}&{self._sas}",
                    headers=self._headers,
                    timeout=self._timeout,
                )
            raise_for_storage(response, "list the container")
            try:
                root = ET.fromstring(response.content)
            except ET.ParseError as exc:
                raise RetryableError(
                    f"azure Blob Storage sent an unreadable listing: {exc}", code="malformed_response"
                ) from exc
            names.extend(name for blob in root.iter("Blob") if (name := blob.findtext("Name")))
            marker = root.findtext("NextMarker") or ""
            if not marker:
                return names

    async def delete_prefix(self, prefix: str) -> None:
        """Delete every blob under ``prefix``."""
        for name in await self.list(prefix):
            await self.delete(name)
