"""The synchronous path: one ``document:translate`` call per document and target language.

All the work happens in ``submit``; each translated document is checkpointed (base64)
as soon as it arrives, so a restart never pays for the same translation twice. The
handle carries the documents to ``fetch``. ``sync_max_bytes`` bounds their size.

Handle (and checkpoint) shape::

    {"mode": "sync", "items": [{"item_id": "…", "name": "a.docx", "extension": "docx",
                                "documents": {"fr": "<base64>"}, "error": null}]}
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence

from stenod.provider import (
    AuthError,
    Batch,
    ErrorInfo,
    FileUpload,
    Handle,
    ItemResult,
    Json,
    PermanentError,
    StepContext,
    TranslatedDocument,
)

from .api import TranslatorApi
from .request import TranslationRequest
from .settings import SYNC_CONTENT_TYPES, SYNC_MAX_GLOSSARY_BYTES


async def submit(
    api: TranslatorApi, batch: Batch, request: TranslationRequest, ctx: StepContext, max_bytes: int
) -> Handle:
    """Translate every item into every target language, checkpointing each document.

    Per-document refusals (4xx) become that item's error; AuthError and RetryableError
    propagate (the dispatcher retries with the checkpoint).
    """
    saved = ctx.saved or {}
    records = {r["item_id"]: r for r in saved.get("items", [])}
    for item in batch.items:
        record = records.setdefault(
            item.item_id,
            {
                "item_id": item.item_id,
                "name": item.name,
                "extension": item.extension,
                "documents": {},
                "error": None,
            },
        )
        if record["error"] is None:
            record["error"] = refusal(item.extension, item.size, item.name, max_bytes, request)
        for language in batch.target_languages:
            if record["error"] is not None or language in record["documents"]:
                continue
            try:
                content = await api.translate(
                    FileUpload(item.name, item.size, item.open, SYNC_CONTENT_TYPES[item.extension]),
                    target=request.targets[language],
                    source=request.source_language,
                    category=request.category,
                    glossary=request.glossary.upload() if request.glossary else None,
                )
            except AuthError:
                raise
            except PermanentError as exc:
                record["error"] = ErrorInfo(exc.code, f"{item.name} → {language}: {exc.message}").to_json()
                continue
            record["documents"][language] = base64.b64encode(content).decode("ascii")
            await ctx.checkpoint({"mode": "sync", "items": list(records.values())})
    return {"mode": "sync", "items": [records[item.item_id] for item in batch.items]}


def fetch(handle: Handle) -> Sequence[ItemResult]:
    """The documents carried by the handle."""
    results: list[ItemResult] = []
    for record in handle["items"]:
        if record.get("error"):
            results.append(ItemResult(record["item_id"], error=ErrorInfo.from_json(record["error"])))
            continue
        documents = tuple(
            TranslatedDocument(language, base64.b64decode(content), record["extension"])
            for language, content in record["documents"].items()
        )
        results.append(ItemResult(record["item_id"], documents=documents))
    return results


def refusal(
    extension: str, size: int, name: str, max_bytes: int, request: TranslationRequest
) -> Mapping[str, Json] | None:
    """Why this document cannot go through the synchronous endpoint, as error JSON."""
    hint = "configure [providers.azure] container_sas_url to use the batch API"
    if extension not in SYNC_CONTENT_TYPES:
        reason = f"{name}: .{extension} files need the batch API; {hint}"
    elif size > max_bytes:
        reason = f"{name} is larger than {max_bytes} bytes, the synchronous limit; {hint}"
    elif request.glossary is not None and request.glossary.size > SYNC_MAX_GLOSSARY_BYTES:
        reason = f"glossary {request.glossary.name} is over 1 MB, the synchronous limit; {hint}"
    else:
        return None
    return ErrorInfo("needs_batch_api", reason).to_json()
