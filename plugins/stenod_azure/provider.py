"""The ``azure`` provider: Azure AI Translator Document Translation.

A single small document (or any set of them when no Blob container is configured)
goes through the synchronous endpoint; larger or many documents go through the batch
API via the configured Blob container. The choice is made once per provider job and
kept in its checkpoint and handle (``"mode": "sync" | "batch"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import httpx
from pydantic import BaseModel

from stenod.provider import (
    AuthError,
    Batch,
    Handle,
    ItemResult,
    Limits,
    PermanentError,
    ProviderSettings,
    RemoteState,
    Status,
    StepContext,
    finished,
)

from . import single
from .api import TranslatorApi
from .batch import BatchFlow
from .blobs import BlobContainer
from .errors import NAME
from .request import TranslationRequest, resolve
from .settings import BATCH_LIMITS, AzureOptions, AzureSettings, sync_only_limits


class AzureTranslatorProvider:
    """Document translation (``translate`` task) through Azure AI Translator."""

    name: ClassVar[str] = NAME
    Settings: ClassVar[type[ProviderSettings]] = AzureSettings
    Options: ClassVar[type[BaseModel]] = AzureOptions
    limits: Limits = BATCH_LIMITS

    def __init__(self, settings: ProviderSettings, http: httpx.AsyncClient) -> None:
        if not isinstance(settings, AzureSettings):
            settings = AzureSettings.model_validate(settings.model_dump())
        self._settings = settings
        self._http = http
        if settings.container_sas_url is None:
            # Without storage only the synchronous endpoint exists: let the dispatcher
            # refuse what it cannot take before anything is sent.
            self.limits = sync_only_limits(settings.sync_max_bytes)

    async def submit(self, batch: Batch, ctx: StepContext) -> Handle:
        """Translate (sync) or start the batch job; resumable from ``ctx.saved``.

        Raises AuthError, PermanentError (bad options, validation), RetryableError.
        """
        request = resolve(batch, self._settings)
        saved_mode = (ctx.saved or {}).get("mode")
        if (saved_mode or self._mode(batch, request)) == "sync":
            return finished(await single.submit(self._api(), batch, request, ctx, self._settings.sync_max_bytes))
        return await self._batch_flow().submit(batch, request, ctx)

    async def poll(self, handle: Handle) -> Status:
        """Sync jobs are finished by the time they have a handle."""
        if handle["mode"] == "sync":
            return Status(RemoteState.DONE, progress=1.0)
        return await self._batch_flow().poll(handle)

    async def fetch(self, handle: Handle) -> Sequence[ItemResult]:
        """One result per document, with one translated document per target language."""
        if handle["mode"] == "sync":
            return single.fetch(handle)
        return await self._batch_flow().fetch(handle)

    async def release(self, handle: Handle) -> None:
        """Called by the daemon after the results are committed: remove the batch's blobs."""
        if handle["mode"] == "batch":
            await self._batch_flow().release(handle)

    async def cancel(self, handle: Handle) -> None:
        """Cancel a batch job (and delete its blobs); sync jobs are already over."""
        if handle["mode"] == "batch":
            await self._batch_flow().cancel(handle)

    def _mode(self, batch: Batch, request: TranslationRequest) -> str:
        if self._settings.container_sas_url is None:
            return "sync"
        items = batch.items
        fits = len(items) == 1 and (
            single.refusal(items[0].extension, items[0].size, items[0].name, self._settings.sync_max_bytes, request)
            is None
        )
        return "sync" if fits else "batch"

    def _api(self) -> TranslatorApi:
        settings = self._settings
        if not settings.base_url:
            raise PermanentError(
                "[providers.azure] base_url must be set to the Translator resource endpoint "
                "(https://<resource>.cognitiveservices.azure.com)",
                code="not_configured",
            )
        if settings.api_key is None or not settings.api_key.get_secret_value():
            raise AuthError(
                "azure has no API key; set [providers.azure] api_key or $CREDENTIALS_DIRECTORY/azure.api_key"
            )
        return TranslatorApi(
            self._http,
            settings.base_url,
            settings.api_key.get_secret_value(),
            region=settings.region,
            api_version=settings.api_version,
            timeout=settings.request_timeout_seconds,
        )

    def _batch_flow(self) -> BatchFlow:
        sas_url = self._settings.container_sas_url
        if sas_url is None:
            raise PermanentError(
                "this job needs the batch API: set [providers.azure] container_sas_url", code="not_configured"
            )
        container = BlobContainer(self._http, sas_url.get_secret_value(), self._settings.request_timeout_seconds)
        return BatchFlow(self._api(), container)
