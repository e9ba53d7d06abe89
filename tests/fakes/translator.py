"""A faithful fake of Azure AI Translator's Document Translation API.

Follows ``shared/providers/azure-document-translation.md`` (api-version 2024-05-01, and
the official SDK's default 2026-03-01 with the same wire shapes): batch start (202 +
``Operation-Location``), job status with ``Retry-After``/``ETag`` walking ``NotStarted →
Running → Succeeded|Failed``, ``ValidationFailed``, paged job and document lists
(``top``/``skip``/``maxpagesize`` with or without ``$``, absolute next links), cancel
(``Cancelling → Cancelled``; 400 on finished jobs), formats, and the synchronous
``document:translate``. Errors use Azure's ``{"error": {code, message, innerError}}``.

Documents really move through Blob Storage: sources are read from, and translations
written to, the SAS URLs in the request, which in tests point at Azurite. The
"translation" is deterministic and keeps the format: every text line (``.txt`` and
other text formats), every HTML text node, every text run of a ``.docx``/``.pptx``/
``.xlsx`` gets a ``[<lang>] `` prefix; glossary terms (``source,target`` CSV lines) are
replaced first. Output of a ``Folder`` job is ``<target folder>/<source blob name>``.

Control API under ``/__fake__/``: ``GET stats``, ``POST reset``, ``POST config``
(``polls_until_done``, ``retry_after``, ``page_size``, ``next_link_key``,
``fail_documents`` (globs), ``fail_all_documents``, ``validation_failure``
(``{code, message}``), ``drop_start_answers``) and ``POST faults`` (a
:mod:`tests.fakes.faultscript` script; routes ``start``, ``status``, ``documents``,
``jobs``, ``cancel``, ``translate``, ``formats``).

Run alone: ``python -m tests.fakes.translator --port N --blob-url http://127.0.0.1:M/devstoreaccount1``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fnmatch
import io
import re
import threading
import uuid
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote, unquote, urlencode, urlsplit

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from support.server import run_forever
from tests.fakes.faultscript import FaultScript, ResetResponse, generic_fault

DEFAULT_API_KEY = "test-translator-key"
API_VERSIONS = {"2024-05-01", "2026-03-01"}
_DEFAULT_CODES = {
    400: "InvalidRequest",
    401: "Unauthorized",
    404: "ResourceNotFound",
    429: "RequestRateTooHigh",
    500: "InternalServerError",
    503: "ServiceUnavailable",
}
_TERMINAL = {"Succeeded", "Failed", "Cancelled", "ValidationFailed"}


SYNC_TYPES = {
    "txt": ("PlainText", "text/plain"),
    "tsv": ("TabSeparatedValues", "text/tab-separated-values"),
    "tab": ("TabSeparatedValues", "text/tab-separated-values"),
    "csv": ("CommaSeparatedValues", "text/csv"),
    "html": ("HtmlFile", "text/html"),
    "htm": ("HtmlFile", "text/html"),
    "mhtml": ("Mhtml", "message/rfc822"),
    "mht": ("Mhtml", "message/rfc822"),
    "pptx": (
        "OpenXmlPresentation",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ),
    "xlsx": ("OpenXmlSpreadsheet", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    "docx": ("OpenXmlWord", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    "msg": ("OutlookMailMessage", "application/vnd.ms-outlook"),
    "xlf": ("XLIFF", "application/xliff+xml"),
}
_LINE_FORMATS = {
    "txt",
    "csv",
    "tsv",
    "tab",
    "md",
    "markdown",
    "mdown",
    "mkdn",
    "mkd",
    "mdwn",
    "mdtxt",
    "mdtext",
    "rmd",
}
_MARKUP_FORMATS = {"html", "htm", "xml", "xlf", "xliff", "dita"}
_OFFICE_RUNS = {
    "docx": (re.compile(r"^word/document\.xml$"), re.compile(r"(<w:t(?:\s[^>]*)?>)([^<]*)(</w:t>)")),
    "pptx": (re.compile(r"^ppt/slides/slide\d+\.xml$"), re.compile(r"(<a:t(?:\s[^>]*)?>)([^<]*)(</a:t>)")),
    "xlsx": (re.compile(r"^xl/sharedStrings\.xml$"), re.compile(r"(<t(?:\s[^>]*)?>)([^<]*)(</t>)")),
}


def fake_translate(data: bytes, extension: str, language: str, terms: dict[str, str]) -> tuple[bytes, int]:
    """The fake "translation" of a document, keeping its format; returns the new bytes
    and the characters charged. Raises ValueError for text that is not UTF-8."""
    counted = [0]

    def render(text: str) -> str:
        counted[0] += len(text)
        for source, target in terms.items():
            text = text.replace(source, target)
        return f"[{language}] {text}"

    if extension in _LINE_FORMATS:
        text = _decode(data)
        lines = [render(line) if line.strip() else line for line in text.split("\n")]
        return "\n".join(lines).encode(), counted[0]
    if extension in _MARKUP_FORMATS:
        return _text_nodes(_decode(data), render).encode(), counted[0]
    if extension in _OFFICE_RUNS:
        return _office(data, *_OFFICE_RUNS[extension], render), counted[0]
    return data, 0


def glossary_terms(data: bytes) -> dict[str, str]:
    """``source,target`` (or tab-separated) lines of a glossary file."""
    terms: dict[str, str] = {}
    for line in _decode(data).splitlines():
        source, sep, target = line.replace("\t", ",").partition(",")
        if sep and source.strip():
            terms[source.strip()] = target.strip()
    return terms


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError("The document is not valid UTF-8 text.") from exc


def _text_nodes(markup: str, render: Any) -> str:
    """Translate text between tags only, leaving tags, attributes and scripts alone."""
    parts = re.split(r"(<[^>]*>)", markup)
    skipping = False
    for index, part in enumerate(parts):
        if part.startswith("<"):
            tag = part[1:].strip().lower()
            skipping = tag.startswith(("script", "style")) or (skipping and not tag.startswith(("/script", "/style")))
        elif part.strip() and not skipping and index > 0:
            lead = part[: len(part) - len(part.lstrip())]
            tail = part[len(part.rstrip()) :]
            parts[index] = f"{lead}{render(part.strip())}{tail}"
    return "".join(parts)


def _office(data: bytes, member: re.Pattern[str], run: re.Pattern[str], render: Any) -> bytes:
    try:
        source = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise ValueError("The document is corrupted.") from exc
    out = io.BytesIO()
    with source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            content = source.read(info)
            if member.match(info.filename):
                xml = content.decode("utf-8")
                xml = run.sub(lambda m: m[1] + (render(m[2]) if m[2].strip() else m[2]) + m[3], xml)
                content = xml.encode("utf-8")
            target.writestr(info, content)
    return out.getvalue()


@dataclass(frozen=True)
class BlobLocation:
    """A blob (or virtual folder) named by a SAS URL."""

    origin: str
    account_path: str
    container: str
    name: str
    sas: str

    @property
    def plain_url(self) -> str:
        return f"{self.origin}{self.account_path}/{self.container}/{quote(self.name)}"

    @property
    def sas_url(self) -> str:
        return f"{self.plain_url}?{self.sas}"

    @property
    def folder_prefix(self) -> str:
        return self.name.strip("/") + "/" if self.name.strip("/") else ""

    def child(self, relative: str) -> BlobLocation:
        return replace(self, name=self.folder_prefix + relative)

    def with_name(self, name: str) -> BlobLocation:
        return replace(self, name=name)


class BlobStore:
    """Reads and writes blobs through the SAS URLs of a request, like the real service.
    With ``account_url`` set, URLs outside that storage account are refused."""

    def __init__(self, account_url: str | None) -> None:
        self._account = account_url.rstrip("/") if account_url else None

    def locate(self, url: str) -> BlobLocation:
        """Raises PermissionError for a URL outside the account or without a SAS."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        account_path = ""
        if self._account is not None:
            if not url.startswith(self._account + "/"):
                raise PermissionError("The storage URL is not in the storage account this service can reach.")
            account_path = urlsplit(self._account).path.rstrip("/")
        if not parts.query:
            raise PermissionError("Cannot access the storage location: no SAS token.")
        container, _, name = unquote(parts.path[len(account_path) + 1 :]).partition("/")
        return BlobLocation(origin, account_path, container, name, parts.query)

    async def list(self, location: BlobLocation, prefix: str) -> list[str]:
        names: list[str] = []
        marker = ""
        async with httpx.AsyncClient() as http:
            while True:
                query = f"restype=container&comp=list&prefix={quote(prefix, safe='')}&marker={quote(marker)}"
                url = f"{location.origin}{location.account_path}/{location.container}?{query}&{location.sas}"
                response = await http.get(url, headers={"x-ms-version": "2023-11-03"})
                if response.status_code != 200:
                    raise PermissionError(f"Cannot list the source container ({response.status_code}).")
                root = ET.fromstring(response.content)
                names += [n for b in root.iter("Blob") if (n := b.findtext("Name"))]
                marker = root.findtext("NextMarker") or ""
                if not marker:
                    return names

    async def read(self, location: BlobLocation) -> bytes:
        async with httpx.AsyncClient() as http:
            response = await http.get(location.sas_url, headers={"x-ms-version": "2023-11-03"})
        if response.status_code != 200:
            raise ValueError(f"Cannot read {location.name} ({response.status_code}).")
        return response.content

    async def write(self, location: BlobLocation, data: bytes) -> None:
        headers = {"x-ms-version": "2023-11-03", "x-ms-blob-type": "BlockBlob"}
        async with httpx.AsyncClient() as http:
            response = await http.put(location.sas_url, content=data, headers=headers)
        if response.status_code not in (200, 201):
            raise ValueError(f"Cannot write the translation of {location.name} ({response.status_code}).")


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Document:
    id: str
    source: BlobLocation
    target: BlobLocation
    to: str
    glossary: BlobLocation | None
    status: str = "NotStarted"
    error: dict[str, Any] | None = None
    characters: int = 0
    created: str = field(default_factory=now)
    last: str = field(default_factory=now)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "sourcePath": self.source.plain_url,
            "createdDateTimeUtc": self.created,
            "lastActionDateTimeUtc": self.last,
            "status": self.status,
            "to": self.to,
            "progress": 1.0 if self.status in _TERMINAL else 0.0,
            "characterCharged": self.characters,
        }
        if self.status == "Succeeded":
            body["path"] = self.target.plain_url
        if self.error:
            body["error"] = self.error
        return body


@dataclass
class Job:
    id: str
    documents: list[Document]
    status: str = "NotStarted"
    error: dict[str, Any] | None = None
    polls: int = 0
    busy: bool = False
    created: str = field(default_factory=now)
    last: str = field(default_factory=now)

    def to_json(self) -> dict[str, Any]:
        docs = self.documents

        def count(*states: str) -> int:
            return sum(1 for d in docs if d.status in states)

        body: dict[str, Any] = {
            "id": self.id,
            "createdDateTimeUtc": self.created,
            "lastActionDateTimeUtc": self.last,
            "status": self.status,
            "summary": {
                "total": len(docs),
                "failed": count("Failed"),
                "success": count("Succeeded"),
                "inProgress": count("Running", "Cancelling"),
                "notYetStarted": count("NotStarted"),
                "cancelled": count("Cancelled"),
                "totalCharacterCharged": sum(d.characters for d in docs),
            },
        }
        if self.error:
            body["error"] = self.error
        return body


@dataclass
class FakeTranslatorState:
    """Everything the fake knows; shared between the app and in-process tests."""

    api_key: str = DEFAULT_API_KEY
    blob_url: str | None = None
    polls_until_done: int = 2
    retry_after: float = 0
    page_size: int = 50
    next_link_key: str = "nextLink"
    fail_documents: list[str] = field(default_factory=list)
    fail_all_documents: bool = False
    validation_failure: dict[str, str] | None = None
    drop_start_answers: int = 0
    jobs: dict[str, Job] = field(default_factory=dict)
    faults: FaultScript = field(default_factory=FaultScript)
    counters: dict[str, int] = field(default_factory=dict)
    batches_by_prefix: dict[str, int] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, name: str) -> None:
        with self.lock:
            self.counters[name] = self.counters.get(name, 0) + 1

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "counters": dict(self.counters),
                "batches_created_by_prefix": dict(self.batches_by_prefix),
                "jobs": {j.id: j.status for j in self.jobs.values()},
            }

    def configure(self, body: dict[str, Any]) -> None:
        with self.lock:
            for key in (
                "polls_until_done",
                "retry_after",
                "page_size",
                "next_link_key",
                "fail_documents",
                "fail_all_documents",
                "validation_failure",
                "drop_start_answers",
                "api_key",
            ):
                if key in body:
                    setattr(self, key, body[key])

    def reset(self) -> None:
        with self.lock:
            self.jobs.clear()
            self.faults.clear()
            self.counters.clear()
            self.batches_by_prefix.clear()
            self.requests.clear()
            self.polls_until_done, self.retry_after, self.page_size = 2, 0, 50
            self.next_link_key, self.fail_documents, self.fail_all_documents = "nextLink", [], False
            self.validation_failure, self.drop_start_answers = None, 0


def azure_error(
    status: int,
    message: str,
    *,
    code: str | None = None,
    inner: str | None = None,
    retry_after: float | None = None,
) -> Response:
    """An error answer in Azure's envelope, with ``x-ms-error-code``."""
    code = code or _DEFAULT_CODES.get(status, "InvalidRequest")
    body = {
        "error": {
            "code": code,
            "message": message,
            "target": "Operation",
            "innerError": {"code": inner or code, "message": message},
        }
    }
    headers = {"x-ms-error-code": code}
    if retry_after is not None:
        headers["Retry-After"] = str(int(retry_after))
    return JSONResponse(body, status_code=status, headers=headers)


def create_app(state: FakeTranslatorState) -> Starlette:
    """The ASGI app serving ``state``."""

    async def guard(request: Request, route: str, subject: str | None = None) -> Response | None:
        state.count(f"{route}_calls")
        if request.headers.get("ocp-apim-subscription-key") != state.api_key:
            return azure_error(401, "Access denied due to invalid subscription key or wrong API endpoint.")
        if request.query_params.get("api-version") not in API_VERSIONS:
            return azure_error(400, "The api-version query parameter is missing or not supported.")
        with state.lock:
            rule = state.faults.next(route, subject)
        if (generic := await generic_fault(rule)) is not None:
            return generic
        if rule is not None and rule.status is not None:
            return azure_error(
                rule.status, rule.message or "injected fault", code=rule.code, retry_after=rule.retry_after
            )
        return None

    def store() -> BlobStore:
        return BlobStore(state.blob_url)

    def job_url(request: Request, job_id: str) -> str:
        version = request.query_params["api-version"]
        return f"{str(request.base_url).rstrip('/')}/translator/document/batches/{job_id}?api-version={version}"

    async def start(request: Request) -> Response:
        if (fault := await guard(request, "start")) is not None:
            return fault
        try:
            body = await request.json()
            inputs = body["inputs"]
            assert isinstance(inputs, list) and inputs
            for batch in inputs:
                assert batch["source"]["sourceUrl"] and batch["targets"]
                urls = [t["targetUrl"] for t in batch["targets"]]
                assert all(isinstance(t["language"], str) for t in batch["targets"]) and len(set(urls)) == len(urls)
                assert len(urls) <= 10
        except (ValueError, KeyError, TypeError, AssertionError):
            return azure_error(400, "The request body is not valid.", inner="InvalidDocumentTranslationRequest")
        job = Job(str(uuid.uuid4()), [])
        try:
            job.documents = await plan_documents(store(), body["inputs"])
        except PermissionError as exc:
            job.status, job.error = (
                "ValidationFailed",
                validation_error("InvalidDocumentAccessLevel", str(exc)),
            )
        with state.lock:
            state.requests.append(body)
            if state.validation_failure:
                job.status = "ValidationFailed"
                job.error = validation_error(**state.validation_failure)
            elif not job.documents and job.status != "ValidationFailed":
                job.status = "ValidationFailed"
                job.error = validation_error("NoTranslatableDocuments", "No translatable documents were found.")
            state.jobs[job.id] = job
            state.counters["batches_created"] = state.counters.get("batches_created", 0) + 1
            for batch in body["inputs"]:
                prefix = (batch["source"].get("filter") or {}).get("prefix") or ""
                state.batches_by_prefix[prefix] = state.batches_by_prefix.get(prefix, 0) + 1
            if state.drop_start_answers > 0:
                state.drop_start_answers -= 1
                return ResetResponse()
        return Response(status_code=202, headers={"Operation-Location": job_url(request, job.id)})

    async def status(request: Request) -> Response:
        job_id = request.path_params["id"]
        if (fault := await guard(request, "status", job_id)) is not None:
            return fault
        with state.lock:
            job = state.jobs.get(job_id)
            if job is None:
                return azure_error(404, "The requested operation was not found.")
            job.polls += 1
            advance = job.status in ("NotStarted", "Running") and not job.busy
            if advance:
                job.busy = True
        if advance:
            try:
                await progress(job)
            finally:
                job.busy = False
        if job.status == "Cancelling":
            job.status = "Cancelled"
            for doc in job.documents:
                if doc.status in ("NotStarted", "Running"):
                    doc.status = "Cancelled"
        headers = {"Retry-After": str(int(state.retry_after)), "ETag": f'"{job.id}-{job.polls}"'}
        return JSONResponse(job.to_json(), headers=headers)

    async def progress(job: Job) -> None:
        if job.status == "NotStarted":
            job.status, job.last = "Running", now()
            for doc in job.documents:
                doc.status = "Running"
        if job.polls < state.polls_until_done:
            return
        blobs = store()
        for doc in job.documents:
            if doc.status != "Running":
                continue
            await translate_document(blobs, doc)
        failed = [d for d in job.documents if d.status == "Failed"]
        job.status = "Failed" if job.documents and len(failed) == len(job.documents) else "Succeeded"
        job.last = now()

    async def translate_document(blobs: BlobStore, doc: Document) -> None:
        name = doc.source.name.rsplit("/", 1)[-1]
        if state.fail_all_documents or any(fnmatch.fnmatch(name, g) for g in state.fail_documents):
            doc.status, doc.error = (
                "Failed",
                document_error("TranslationFailed", f"Injected failure for {name}."),
            )
            return
        try:
            data = await blobs.read(doc.source)
            terms = glossary_terms(await blobs.read(doc.glossary)) if doc.glossary else {}
            translated, characters = fake_translate(data, name.rsplit(".", 1)[-1].lower(), doc.to, terms)
            await blobs.write(doc.target, translated)
        except ValueError as exc:
            doc.status, doc.error = "Failed", document_error("WrongDocumentEncoding", str(exc))
            return
        doc.status, doc.characters, doc.last = "Succeeded", characters, now()

    async def cancel(request: Request) -> Response:
        job_id = request.path_params["id"]
        if (fault := await guard(request, "cancel", job_id)) is not None:
            return fault
        with state.lock:
            job = state.jobs.get(job_id)
            if job is None:
                return azure_error(404, "The requested operation was not found.")
            if job.status in _TERMINAL or job.status == "Cancelling":
                return azure_error(
                    400,
                    "The operation cannot be cancelled in its current state.",
                    inner="OperationNotCancellable",
                )
            job.status, job.last = "Cancelling", now()
        return JSONResponse(job.to_json())

    async def documents(request: Request) -> Response:
        job_id = request.path_params["id"]
        if (fault := await guard(request, "documents", job_id)) is not None:
            return fault
        with state.lock:
            job = state.jobs.get(job_id)
            if job is None:
                return azure_error(404, "The requested operation was not found.")
            docs = [d.to_json() for d in job.documents]
        return page(request, filtered(request, docs), f"/translator/document/batches/{job_id}/documents")

    async def document(request: Request) -> Response:
        job_id, doc_id = request.path_params["id"], request.path_params["doc"]
        if (fault := await guard(request, "documents", job_id)) is not None:
            return fault
        with state.lock:
            job = state.jobs.get(job_id)
            doc = next((d for d in job.documents if d.id == doc_id), None) if job else None
        if doc is None:
            return azure_error(404, "The requested document was not found.")
        return JSONResponse(doc.to_json(), headers={"Retry-After": str(int(state.retry_after))})

    async def jobs(request: Request) -> Response:
        if (fault := await guard(request, "jobs")) is not None:
            return fault
        with state.lock:
            listed = [j.to_json() for j in reversed(state.jobs.values())]
        start_from = param(request, "createdDateTimeUtcStart")
        if start_from:
            since = dt.datetime.fromisoformat(start_from.replace(" ", "+"))
            listed = [j for j in listed if dt.datetime.fromisoformat(j["createdDateTimeUtc"]) >= since]
        return page(request, filtered(request, listed), "/translator/document/batches")

    def filtered(request: Request, values: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if ids := param(request, "ids"):
            values = [v for v in values if v["id"] in ids.split(",")]
        if statuses := param(request, "statuses"):
            wanted = {s.strip().lower() for s in statuses.split(",")}
            values = [v for v in values if v["status"].lower() in wanted]
        return values

    def page(request: Request, values: list[dict[str, Any]], path: str) -> Response:
        skip = int(param(request, "skip") or 0)
        top = param(request, "top")
        size = min(int(param(request, "maxpagesize") or state.page_size), state.page_size, 100)
        remaining = values[skip:]
        if top is not None:
            remaining = remaining[: int(top)]
        body: dict[str, Any] = {"value": remaining[:size]}
        if len(remaining) > size:
            query = {
                "api-version": request.query_params["api-version"],
                "skip": skip + size,
                "maxpagesize": size,
            }
            if top is not None:
                query["top"] = int(top) - size
            body[state.next_link_key] = f"{str(request.base_url).rstrip('/')}{path}?{urlencode(query)}"
        else:
            body[state.next_link_key] = None
        return JSONResponse(body, headers={"Retry-After": str(int(state.retry_after))})

    async def formats(request: Request) -> Response:
        if (fault := await guard(request, "formats")) is not None:
            return fault
        kind = (request.query_params.get("type") or "document").lower()
        if kind == "glossary":
            value = [
                {"format": "CSV", "fileExtensions": [".csv"], "contentTypes": ["text/csv"]},
                {"format": "XLIFF", "fileExtensions": [".xlf"], "contentTypes": ["application/xliff+xml"]},
            ]
        else:
            value = [
                {"format": fmt, "fileExtensions": [f".{ext}"], "contentTypes": [ctype]}
                for ext, (fmt, ctype) in SYNC_TYPES.items()
            ]
        return JSONResponse({"value": value})

    async def translate(request: Request) -> Response:
        if (fault := await guard(request, "translate")) is not None:
            return fault
        target = request.query_params.get("targetLanguage")
        if not target:
            return azure_error(400, "The target language is required.", inner="MissingTargetLanguage")
        async with request.form(max_part_size=16 * 1024 * 1024) as form:
            upload = form.get("document")
            glossary = form.get("glossary")
            if upload is None or isinstance(upload, str):
                return azure_error(400, "The document file is required.", inner="MissingDocument")
            data = await upload.read()
            name, ctype = upload.filename or "document", upload.content_type
            terms = (
                glossary_terms(await glossary.read()) if glossary is not None and not isinstance(glossary, str) else {}
            )
        extension = name.rsplit(".", 1)[-1].lower()
        if extension not in SYNC_TYPES or len(data) > 10_000_000:
            return azure_error(400, "The document file type is not supported.", inner="UnsupportedMediaType")
        try:
            translated, characters = fake_translate(data, extension, target, terms)
        except ValueError as exc:
            return azure_error(400, str(exc), inner="WrongDocumentEncoding")
        headers = {"x-metered-usage": str(characters)}
        if rid := request.headers.get("x-ms-client-request-id"):
            headers["x-ms-client-request-id"] = rid
        return Response(translated, media_type=ctype or SYNC_TYPES[extension][1], headers=headers)

    async def control_stats(request: Request) -> Response:
        return JSONResponse(state.stats())

    async def control_reset(request: Request) -> Response:
        state.reset()
        return JSONResponse({"ok": True})

    async def control_config(request: Request) -> Response:
        state.configure(await request.json())
        return JSONResponse({"ok": True})

    async def control_faults(request: Request) -> Response:
        body = await request.json()
        with state.lock:
            state.faults.load(body if isinstance(body, list) else [body])
        return JSONResponse({"ok": True})

    async def plan_documents(blobs: BlobStore, inputs: list[dict[str, Any]]) -> list[Document]:
        documents: list[Document] = []
        for batch in inputs:
            source = batch["source"]
            root = blobs.locate(source["sourceUrl"])
            flt = source.get("filter") or {}
            if batch.get("storageType") == "File":
                names = [root.name]
            else:
                names = await blobs.list(root, (root.folder_prefix + (flt.get("prefix") or "")))
                names = [n for n in names if n.endswith(flt.get("suffix") or "")]
            for target in batch["targets"]:
                out = blobs.locate(target["targetUrl"])
                glossaries = target.get("glossaries") or []
                glossary = blobs.locate(glossaries[0]["glossaryUrl"]) if glossaries else None
                for name in names:
                    relative = name[len(root.folder_prefix) :] if batch.get("storageType") != "File" else None
                    dest = out.child(relative) if relative is not None else out
                    documents.append(
                        Document(str(uuid.uuid4()), root.with_name(name), dest, target["language"], glossary)
                    )
        return documents

    def validation_error(code: str, message: str) -> dict[str, Any]:
        return {
            "code": "InvalidRequest",
            "message": message,
            "target": "Operation",
            "innerError": {"code": code, "message": message},
        }

    def document_error(code: str, message: str) -> dict[str, Any]:
        return {
            "code": "InternalServerError",
            "message": message,
            "target": "Document",
            "innerError": {"code": code, "message": message},
        }

    def param(request: Request, name: str) -> str | None:
        return request.query_params.get(name) or request.query_params.get(f"${name}")

    batches = "/translator/document/batches"
    return Starlette(
        routes=[
            Route(batches, start, methods=["POST"]),
            Route(batches, jobs, methods=["GET"]),
            Route(batches + "/{id}", status, methods=["GET"]),
            Route(batches + "/{id}", cancel, methods=["DELETE"]),
            Route(batches + "/{id}/documents", documents, methods=["GET"]),
            Route(batches + "/{id}/documents/{doc}", document, methods=["GET"]),
            Route("/translator/document/formats", formats, methods=["GET"]),
            Route("/translator/document:translate", translate, methods=["POST"]),
            Route("/__fake__/stats", control_stats, methods=["GET"]),
            Route("/__fake__/reset", control_reset, methods=["POST"]),
            Route("/__fake__/config", control_config, methods=["POST"]),
            Route("/__fake__/faults", control_faults, methods=["POST"]),
        ]
    )


class FakeTranslatorServer:
    """The fake's state plus its ASGI app, for ``serve(fake.app)`` in tests."""

    def __init__(self, blob_url: str | None = None, api_key: str = DEFAULT_API_KEY) -> None:
        self.state = FakeTranslatorState(api_key=api_key, blob_url=blob_url)
        self.app = create_app(self.state)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--blob-url", default=None, help="account URL of the Blob service sources may come from")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    args = parser.parse_args()
    run_forever(FakeTranslatorServer(args.blob_url, args.api_key).app, args.port)


if __name__ == "__main__":
    main()


def make_docx(paragraphs: list[str]) -> bytes:
    """A minimal valid .docx whose body has one run per paragraph (test input)."""
    body = "".join(f'<w:p><w:r><w:t xml:space="preserve">{p}</w:t></w:r></w:p>' for p in paragraphs)
    parts = {
        "[Content_Types].xml": (
            '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/'
            'content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
            'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName='
            '"/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.'
            'wordprocessingml.document.main+xml"/></Types>'
        ),
        "_rels/.rels": (
            '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/'
            '2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/'
            '2006/relationships/officeDocument" Target="word/document.xml"/></Relationships>'
        ),
        "word/document.xml": (
            '<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="http://schemas.openxmlformats.org/'
            f'wordprocessingml/2006/main"><w:body>{body}</w:body></w:document>'
        ),
    }
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in parts.items():
            archive.writestr(name, text)
    return out.getvalue()


def docx_texts(data: bytes) -> list[str]:
    """The text runs of a .docx, in order."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        xml = archive.read("word/document.xml").decode()
    return re.findall(r"<w:t(?:\s[^>]*)?>([^<]*)</w:t>", xml)
