"""The batch path: sources go to the configured Blob container, Azure translates them
into per-language folders of the same container, stenod downloads the results and
deletes everything it put there.

Blob layout, all under ``stenod/<batch id>/``: ``in/<nnnn>/<name>`` (sources),
``out/<language>/…`` (Azure's output), ``glossary/<file>``.

Checkpoints, in order: ``uploaded`` (sources are in the container), ``starting``
(about to create the job; a restart from here first looks for a job it may have
created before the crash), ``started`` (the job id). Handle::

    {"mode": "batch", "job_id": "…", "root": "stenod/…", "targets": {"fr": "fr"},
     "items": [{"item_id": "…", "name": "a.docx"}]}
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import re
from collections.abc import Mapping, Sequence
from urllib.parse import unquote, urlsplit

from stenod.provider import (
    Batch,
    ErrorInfo,
    FileUpload,
    Handle,
    ItemResult,
    Json,
    RemoteState,
    Status,
    StepContext,
    TranslatedDocument,
)

from .api import TranslatorApi
from .blobs import BlobContainer
from .errors import error_info
from .request import TranslationRequest
from .settings import SYNC_CONTENT_TYPES

# A job created just before a crash is looked for among jobs created since the
# "starting" checkpoint, minus this much for clock skew between us and Azure.
_CLOCK_SKEW = dt.timedelta(minutes=10)
_STATES = {
    "notstarted": RemoteState.PENDING,
    "running": RemoteState.RUNNING,
    "cancelling": RemoteState.RUNNING,
    "canceling": RemoteState.RUNNING,
    "succeeded": RemoteState.DONE,
    "cancelled": RemoteState.CANCELLED,
    "canceled": RemoteState.CANCELLED,
}
_INPUT_FOLDER = re.compile(r"/in/(\d{4})/")


class BatchFlow:
    """Submit, poll, fetch and cancel batch translation jobs."""

    def __init__(self, api: TranslatorApi, container: BlobContainer) -> None:
        self._api = api
        self._container = container

    async def submit(self, batch: Batch, request: TranslationRequest, ctx: StepContext) -> Handle:
        """Upload the sources, then create the job exactly once.

        Raises AuthError (key or SAS refused), PermanentError, RetryableError.
        """
        root = blob_root(batch.batch_id)
        saved = ctx.saved or {}
        stage = saved.get("stage")
        if stage is None:
            for index, item in enumerate(batch.items):
                content_type = SYNC_CONTENT_TYPES.get(item.extension, "application/octet-stream")
                upload = FileUpload(item.name, item.size, item.open, content_type)
                await self._container.put(source_blob(root, index, item.name), upload)
            if request.glossary is not None:
                glossary = request.glossary.upload()
                await self._container.put(f"{root}/glossary/{glossary.filename}", glossary)
            await ctx.checkpoint({"mode": "batch", "stage": "uploaded"})
            stage = "uploaded"
        job_id = saved.get("job_id")
        if stage == "uploaded":
            since = (dt.datetime.now(dt.UTC) - _CLOCK_SKEW).strftime("%Y-%m-%dT%H:%M:%SZ")
            await ctx.checkpoint({"mode": "batch", "stage": "starting", "since": since})
            job_id = await self._api.start(self._job_body(root, request))
            await ctx.checkpoint({"mode": "batch", "stage": "started", "job_id": job_id})
        elif stage == "starting":
            job_id = await self._find_job(root, saved["since"]) or await self._api.start(self._job_body(root, request))
            await ctx.checkpoint({"mode": "batch", "stage": "started", "job_id": job_id})
        return {
            "mode": "batch",
            "job_id": job_id,
            "root": root,
            "targets": request.targets,
            "items": [{"item_id": item.item_id, "name": item.name} for item in batch.items],
        }

    async def poll(self, handle: Handle) -> Status:
        """The job's state, with Azure's Retry-After. A job that ended without
        results (failed, validation failed, cancelled) has its blobs deleted here."""
        body, retry_after = await self._api.status(handle["job_id"])
        raw = str(body.get("status", "")).lower()
        error: ErrorInfo | None = None
        if raw == "validationfailed" or (raw == "failed" and body.get("error")):
            state = RemoteState.FAILED
            error = error_info(body.get("error"), "the batch")
        elif raw == "failed":
            state = RemoteState.DONE  # every document failed: fetch reports each one's reason
        elif raw in _STATES:
            state = _STATES[raw]
        else:
            state = RemoteState.RUNNING
        if state in (RemoteState.FAILED, RemoteState.CANCELLED):
            await self._container.delete_prefix(handle["root"] + "/")
        return Status(state=state, progress=_progress(body.get("summary")), retry_after=retry_after, error=error)

    async def fetch(self, handle: Handle) -> Sequence[ItemResult]:
        """Download every translation. Idempotent: the blobs stay until :meth:`release`."""
        items: list[Mapping[str, Json]] = handle["items"]
        wanted: Mapping[str, str] = handle["targets"]
        by_code = {code.lower(): tag for tag, code in wanted.items()}
        documents: dict[int, dict[str, TranslatedDocument]] = {i: {} for i in range(len(items))}
        errors: dict[int, ErrorInfo] = {}
        async for status in self._api.documents(handle["job_id"]):
            index = self._item_index(status, handle["root"], items)
            language = by_code.get(str(status.get("to", "")).lower())
            if index is None or language is None:
                continue
            name = str(items[index]["name"])
            if str(status.get("status", "")).lower() != "succeeded":
                errors.setdefault(index, error_info(status.get("error"), f"{name} to {language}"))
                continue
            target = self._container.name_of(str(status.get("path", "")))
            if target is None:
                message = f"azure put the {language} translation of {name} outside the container"
                errors.setdefault(index, ErrorInfo("bad_target", message))
                continue
            content = await self._container.get(target)
            extension = target.rsplit(".", 1)[-1].lower() if "." in target.rsplit("/", 1)[-1] else ""
            documents[index][language] = TranslatedDocument(language, content, extension)
        results: list[ItemResult] = []
        for index, item in enumerate(items):
            missing = [tag for tag in wanted if tag not in documents[index]]
            error = errors.get(index)
            if error is None and missing:
                error = ErrorInfo("missing_translation", f"azure returned no {'/'.join(missing)} of {item['name']}")
            results.append(ItemResult(str(item["item_id"]), documents=tuple(documents[index].values()), error=error))
        return results

    async def release(self, handle: Handle) -> None:
        """Delete the job's blobs, once its translations are safe in the daemon's journal (a
        crash before that makes the daemon fetch again, which needs them)."""
        await self._container.delete_prefix(handle["root"] + "/")

    async def cancel(self, handle: Handle) -> None:
        """Cancel the job and delete its blobs (documents Azure is translating at this
        moment may still land in ``out/`` afterwards: Azure offers no way to wait)."""
        await self._api.cancel(handle["job_id"])
        await self._container.delete_prefix(handle["root"] + "/")

    def _job_body(self, root: str, request: TranslationRequest) -> dict[str, Json]:
        source: dict[str, Json] = {
            "sourceUrl": self._container.sas_url,
            "filter": {"prefix": f"{root}/in/"},
            "storageSource": "AzureBlob",
        }
        if request.source_language:
            source["language"] = request.source_language
        targets: list[dict[str, Json]] = []
        for tag, code in request.targets.items():
            target: dict[str, Json] = {
                "targetUrl": self._container.folder_sas_url(f"{root}/out/{tag}"),
                "language": code,
                "storageSource": "AzureBlob",
            }
            if request.category:
                target["category"] = request.category
            if request.glossary is not None:
                glossary_blob = f"{root}/glossary/{request.glossary.path.name}"
                target["glossaries"] = [
                    {
                        "glossaryUrl": self._container.blob_sas_url(glossary_blob),
                        "format": request.glossary.format,
                        "storageSource": "AzureBlob",
                    }
                ]
            targets.append(target)
        return {"inputs": [{"source": source, "targets": targets, "storageType": "Folder"}]}

    async def _find_job(self, root: str, since: str) -> str | None:
        """A job this batch created before a crash lost its id: one whose documents
        come from our ``in/`` folder. Jobs that list no documents yet cannot be
        recognised (Azure does not echo the request), a narrow window."""
        async with contextlib.aclosing(self._api.jobs_since(since)) as jobs:
            async for job in jobs:
                job_id = job.get("id")
                if isinstance(job_id, str) and await self._reads_from(job_id, root):
                    return job_id
        return None

    async def _reads_from(self, job_id: str, root: str) -> bool:
        async with contextlib.aclosing(self._api.documents(job_id, page_size=1)) as documents:
            async for document in documents:
                source = self._container.name_of(str(document.get("sourcePath", "")))
                return source is not None and source.startswith(f"{root}/in/")
        return False

    def _item_index(self, status: Mapping[str, Json], root: str, items: Sequence[Mapping[str, Json]]) -> int | None:
        source_path = str(status.get("sourcePath", ""))
        name = self._container.name_of(source_path)
        if name is None:
            # Azure may spell the account host differently; the folder is ours anyway.
            match = _INPUT_FOLDER.search(unquote(urlsplit(source_path).path))
            index = int(match.group(1)) if match else None
        else:
            match = re.fullmatch(re.escape(root) + r"/in/(\d{4})/.+", name)
            index = int(match.group(1)) if match else None
        return index if index is not None and index < len(items) else None


def _progress(summary: Json) -> float | None:
    if not isinstance(summary, Mapping):
        return None
    total = summary.get("total")
    done = [n for key in ("success", "failed", "cancelled") if isinstance(n := summary.get(key), int)]
    if not isinstance(total, int) or total <= 0 or len(done) != 3:
        return None
    return min(1.0, sum(done) / total)


def blob_root(batch_id: str) -> str:
    """The folder of one batch's blobs; safe characters only, unique per batch id."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", batch_id)[:64]
    if safe != batch_id:
        safe += "-" + hashlib.sha256(batch_id.encode()).hexdigest()[:12]
    return f"stenod/{safe}"


def source_blob(root: str, index: int, name: str) -> str:
    return f"{root}/in/{index:04d}/{name}"
