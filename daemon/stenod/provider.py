"""The public plugin API: the only stenod module a provider plugin imports.

A provider is a class registered under the entry-point group ``stenod.providers``.
The daemon builds one instance per configured provider with
``cls(settings, http)`` and drives every provider job through
``submit → poll → fetch`` (and ``cancel`` on request). Everything a plugin needs
(value types, the error taxonomy, the settings base model, small helpers for HTTP
error mapping, safe reading of input files and uploading them without reading on the
event loop, decoding untrusted media in a memory-capped child process: :class:`MediaChild`)
is defined or re-exported here.

Stability: names in ``__all__`` are the contract; ``tests/unit/test_plugins.py``
pins them.
"""

from __future__ import annotations

import contextlib
import email.utils
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, ClassVar, Protocol, TypeAlias, runtime_checkable

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from stenod.errors import (
    AuthError,
    ConfigError,
    ErrorInfo,
    JobError,
    PermanentError,
    RetryableError,
)
from stenod.languages import LANGUAGES, language_name
from stenod.live import LiveAudio, LiveTranscriber
from stenod.media_child import MediaChild
from stenod.speakers import Diarization, KnownSpeaker, Speaker, Voiceprint, speakers_from_json
from stenod.uploads import FileUpload, MultipartBody, file_chunks

__all__ = [
    "LANGUAGES",
    "AuthError",
    "Batch",
    "BatchItem",
    "ConfigError",
    "Cost",
    "Diarization",
    "ErrorInfo",
    "FileUpload",
    "Handle",
    "ItemResult",
    "ItemStatus",
    "JobError",
    "Json",
    "KnownSpeaker",
    "Limits",
    "LiveAudio",
    "LiveTranscriber",
    "MediaChild",
    "MultipartBody",
    "NoOptions",
    "PermanentError",
    "Provider",
    "ProviderSettings",
    "RemoteState",
    "RetryableError",
    "Segment",
    "Speaker",
    "StartContext",
    "Status",
    "StepContext",
    "Task",
    "Transcript",
    "TranslatedDocument",
    "Voiceprint",
    "Word",
    "error_text",
    "file_chunks",
    "finished",
    "is_finished",
    "language_name",
    "provider_http_errors",
    "retry_after_seconds",
]

Json: TypeAlias = Any
"""A JSON-serialisable value (dict/list/str/int/float/bool/None)."""

Handle: TypeAlias = Mapping[str, Json]
"""What ``submit`` returns: everything needed to poll, fetch and cancel the provider
job later, persisted in the journal. Must be JSON-serialisable and must not contain
secrets or presigned URLs (they are short-lived and are credentials)."""

_FINISHED_KEY = "stenod:finished"


def finished(handle: Mapping[str, Json]) -> dict[str, Json]:
    """Mark a handle whose work is already done (a synchronous backend answered with the
    result): the dispatcher then polls at once instead of waiting the poll interval."""
    return {**handle, _FINISHED_KEY: True}


def is_finished(handle: Mapping[str, Json]) -> bool:
    return bool(handle.get(_FINISHED_KEY))


class Task(StrEnum):
    """What a job asks for."""

    TRANSCRIBE = "transcribe"
    TRANSLATE = "translate"


@dataclass(frozen=True, slots=True)
class Limits:
    """What a provider accepts. The dispatcher enforces these *before* any upload and
    packs items into as few provider jobs as they allow.

    ``None`` means "no limit". ``formats`` are lower-case file extensions without the dot.
    ``max_audio_seconds`` is per file and is checked against a local probe of the file.
    ``languages`` are the spoken or written languages the provider takes, and
    ``target_languages`` those it translates into (None: the same as ``languages``). A bare
    language in either set admits its regional forms: ``en`` admits ``en-US``.
    """

    tasks: frozenset[Task]
    formats: frozenset[str]
    max_files: int | None = 1
    max_file_bytes: int | None = None
    max_batch_bytes: int | None = None
    max_audio_seconds: float | None = None
    min_poll_seconds: float = 1.0
    languages: frozenset[str] | None = None
    target_languages: frozenset[str] | None = None
    # Says who spoke when a job asks (``Batch.diarization``); when it cannot now (an optional
    # part is not installed), ``diarization_missing`` says what a person must do.
    diarization: bool = False
    diarization_missing: str | None = None

    def accepts(self, language: str, *, target: bool = False) -> bool:
        """Whether ``language`` is one the provider takes (or, with ``target``, translates into)."""
        allowed = self.target_languages if target and self.target_languages is not None else self.languages
        if allowed is None or language in allowed:
            return True
        return language.split("-", 1)[0] in allowed


class ProviderSettings(BaseModel):
    """Keys every ``[providers.<name>]`` section understands. A plugin's ``Settings``
    subclasses this and adds its own keys. ``api_key`` may also come from
    ``$CREDENTIALS_DIRECTORY/<name>.api_key``."""

    model_config = ConfigDict(extra="forbid")

    api_key: SecretStr | None = None
    base_url: str | None = None
    poll_interval_seconds: float | None = Field(default=None, gt=0)
    max_concurrent_jobs: int = Field(default=4, ge=1)
    request_timeout_seconds: float = Field(default=60.0, gt=0)


class NoOptions(BaseModel):
    """The option model of a provider that takes no per-job options."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One input file of a provider job.

    ``name`` is a safe base name (no directory part) to use for uploads. Read the
    content only through :meth:`open`, which refuses the file if it was replaced
    (symlink, different inode, changed size) since stenod accepted it; upload it as
    ``FileUpload(item.name, item.size, item.open)`` (see :class:`MultipartBody` and
    :func:`file_chunks`), which calls ``open`` and reads in a worker thread.
    """

    item_id: str
    path: Path
    name: str
    size: int
    duration: float | None = None
    device: int | None = None
    inode: int | None = None

    @property
    def extension(self) -> str:
        return self.path.suffix.lower().lstrip(".")

    def open(self) -> IO[bytes]:
        """Open the input for reading, without following symlinks.

        Raises PermanentError if the file is gone or is no longer the file that was
        accepted.
        """
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise PermanentError(
                f"input file {self.path} disappeared before it could be read", code="input_missing"
            ) from exc
        except OSError as exc:
            raise PermanentError(f"cannot open {self.path}: {exc.strerror}", code="input_unreadable") from exc
        st = os.fstat(fd)
        same = (self.inode is None or (st.st_ino == self.inode and st.st_dev == self.device)) and (
            st.st_size == self.size
        )
        if not same:
            os.close(fd)
            raise PermanentError(f"input file {self.path} changed after it was accepted", code="input_changed")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")


@dataclass(frozen=True, slots=True)
class Batch:
    """One provider job: items of the same task, language and options.

    ``batch_id`` is stable across restarts: use it as an idempotency key or request
    id where the provider has one. ``options`` is an instance of the provider's
    ``Options`` model. ``diarization``: the job asks who spoke (only given to a provider
    whose ``Limits.diarization`` is true); segments and words then carry ``speaker``, and
    the transcript lists its ``speakers``.
    """

    batch_id: str
    task: Task
    items: tuple[BatchItem, ...]
    language: str | None
    target_languages: tuple[str, ...]
    options: BaseModel
    diarization: Diarization | None = None


class StepContext(Protocol):
    """Handed to ``submit``: resumability and progress reporting."""

    @property
    def saved(self) -> Mapping[str, Json] | None:
        """The last checkpoint committed for this provider job, or None on a first run."""
        ...

    async def checkpoint(self, data: Mapping[str, Json]) -> None:
        """Commit ``data`` durably before the next remote side effect. After a crash,
        ``submit`` is called again with ``saved == data`` and must continue from it."""
        ...

    def progress(self, fraction: float) -> None:
        """Report progress 0..1 of a long-running local step (rate-limited by the core)."""
        ...

    def segment(self, item_id: str, segment: Segment) -> None:
        """Report a piece of ``item_id``'s transcript as soon as it is decoded, so a client
        streaming the job sees text while the rest is still running. Optional: the final
        result from ``fetch`` is what counts; a provider that reports nothing is fine."""
        ...


@dataclass(frozen=True, slots=True)
class StartContext:
    """Handed to a provider's optional ``start``: where it may keep files of its own."""

    state_dir: Path
    """The daemon's state directory (``state_dir``); a provider keeps caches in a folder of
    its own below it, such as ``state_dir / "models"``."""


class RemoteState(StrEnum):
    """A provider job's state as the dispatcher needs it."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"  # finished; fetch() gives per-item results (some may have failed)
    FAILED = "failed"  # the whole provider job failed; Status.error says why
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class ItemStatus:
    item_id: str
    state: RemoteState
    error: ErrorInfo | None = None


@dataclass(frozen=True, slots=True)
class Status:
    """The answer to ``poll``. ``retry_after`` asks for the next poll no sooner than
    that many seconds from now (the core also applies the minimum poll interval)."""

    state: RemoteState
    progress: float | None = None
    items: tuple[ItemStatus, ...] = ()
    retry_after: float | None = None
    error: ErrorInfo | None = None


@dataclass(frozen=True, slots=True)
class Word:
    start: float
    end: float
    text: str
    speaker: str | None = None
    confidence: float | None = None


@dataclass(frozen=True, slots=True)
class Segment:
    """A timed piece of a transcript. ``extra`` keeps provider-specific fields
    (sentiment, emotion, detected language, …) in the normalised JSON."""

    start: float
    end: float
    text: str
    speaker: str | None = None
    confidence: float | None = None
    extra: Mapping[str, Json] = field(default_factory=dict)


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


@dataclass(frozen=True, slots=True)
class Transcript:
    """The normalised transcript of one input, the same for every provider."""

    text: str
    language: str | None = None
    duration: float | None = None
    segments: tuple[Segment, ...] = ()
    words: tuple[Word, ...] | None = None
    provider: str | None = None
    provider_job_id: str | None = None
    language_probability: float | None = None  # set when the provider detected the language
    speakers: tuple[Speaker, ...] = ()  # each voice heard, when the provider said who spoke

    def to_json(self) -> dict[str, Json]:
        """JSON-safe: a non-finite number from a provider (NaN, inf) becomes null, which every
        JSON reader accepts (a bare NaN token is not JSON)."""
        return {
            "text": self.text,
            "language": self.language,
            "language_probability": _finite(self.language_probability),
            "duration": _finite(self.duration),
            "segments": [
                {
                    "start": _finite(s.start),
                    "end": _finite(s.end),
                    "text": s.text,
                    "speaker": s.speaker,
                    "confidence": _finite(s.confidence),
                    **({"extra": dict(s.extra)} if s.extra else {}),
                }
                for s in self.segments
            ],
            "words": None
            if self.words is None
            else [
                {
                    "start": _finite(w.start),
                    "end": _finite(w.end),
                    "text": w.text,
                    "speaker": w.speaker,
                    "confidence": _finite(w.confidence),
                }
                for w in self.words
            ],
            "provider": self.provider,
            "provider_job_id": self.provider_job_id,
            **({"speakers": [s.to_json() for s in self.speakers]} if self.speakers else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Json]) -> Transcript:
        words = data.get("words")
        return cls(
            text=data["text"],
            language=data.get("language"),
            duration=data.get("duration"),
            segments=tuple(
                Segment(
                    start=s["start"] if s["start"] is not None else 0.0,  # null: it was not a number
                    end=s["end"] if s["end"] is not None else (s["start"] or 0.0),
                    text=s["text"],
                    speaker=s.get("speaker"),
                    confidence=s.get("confidence"),
                    extra=s.get("extra") or {},
                )
                for s in data.get("segments") or ()
            ),
            words=None
            if words is None
            else tuple(
                Word(w["start"] or 0.0, w["end"] or w["start"] or 0.0, w["text"], w.get("speaker"), w.get("confidence"))
                for w in words
            ),
            provider=data.get("provider"),
            provider_job_id=data.get("provider_job_id"),
            language_probability=data.get("language_probability"),
            speakers=speakers_from_json(data.get("speakers")),
        )


@dataclass(frozen=True, slots=True)
class TranslatedDocument:
    """A translated document for one target language; written as
    ``<stem>.<language>.<extension>`` beside the input (or in the output dir)."""

    language: str
    content: bytes
    extension: str


@dataclass(frozen=True, slots=True)
class Cost:
    amount: float
    currency: str = "USD"


@dataclass(frozen=True, slots=True)
class ItemResult:
    """The outcome of one item: a transcript, translated documents, or an error."""

    item_id: str
    transcript: Transcript | None = None
    documents: tuple[TranslatedDocument, ...] = ()
    error: ErrorInfo | None = None
    cost: Cost | None = None


@runtime_checkable
class Provider(Protocol):
    """A batch-job backend. One instance per configured provider, shared by all jobs.

    Constructed as ``cls(settings, http)`` where ``settings`` is an instance of
    ``cls.Settings`` and ``http`` the daemon's shared ``httpx.AsyncClient`` (no base
    URL; plugins build absolute URLs from ``settings.base_url``).

    Every method may raise :class:`RetryableError` (the dispatcher retries with
    backoff, honouring ``retry_after``), :class:`PermanentError` (the provider job's
    items fail at once) or :class:`AuthError`. Anything else is treated as a bug in
    the plugin: logged with its traceback and recorded as ``internal_error``.
    """

    name: ClassVar[str]
    Settings: ClassVar[type[ProviderSettings]]
    Options: ClassVar[type[BaseModel]]
    limits: Limits

    async def submit(self, batch: Batch, ctx: StepContext) -> Handle:
        """Create (and start) the provider job. Called again after a crash with
        ``ctx.saved`` holding the last checkpoint: continue from it, never create a
        second remote job. Checkpoint right after every remote side effect. A
        synchronous backend may do all the work here and return the results in the
        handle (see ``poll``)."""
        ...

    async def poll(self, handle: Handle) -> Status:
        """Ask for the provider job's state. Idempotent. Called no more often than
        the minimum poll interval."""
        ...

    async def fetch(self, handle: Handle) -> Sequence[ItemResult]:
        """Return one result per item of a DONE job. Idempotent: may be called again
        after a crash."""
        ...

    async def cancel(self, handle: Handle) -> None:
        """Cancel the provider job if the provider supports it; otherwise do nothing."""
        ...

    # Optional: ``async def start(self, ctx: StartContext) -> None`` — called once after
    # construction, before any job: get a local engine ready (a model on disk). Raise
    # ConfigError with what to do; the daemon then refuses to start when this provider is
    # its default or is configured, and reports it unavailable otherwise.
    # Optional: ``max_concurrent_jobs: int`` — set by ``start`` when the provider's capacity
    # is known only then (a local engine's worker count); used when the settings leave
    # ``max_concurrent_jobs`` at 0.
    # Optional: ``def describe(self) -> Mapping[str, Json]`` — extra facts for
    # ``stenod providers`` (the model in use, the device); cheap, callable before ``start``.
    # Optional: ``async def release(self, handle: Handle) -> None`` — called once the
    # fetched results are committed to the journal; delete remote copies (blobs, uploaded
    # files) here rather than in fetch(), which may run again after a crash.
    # Optional: ``async def aclose(self) -> None`` — called once at daemon shutdown.
    # Optional: :class:`LiveTranscriber` (``start_live``, ``transcribe_live``) — voice
    # commands in memory, for the Wyoming listener.


# What a network failure means, for the person reading the error (a voice assistant's user
# among them); the exception's own text is left out: it may quote an address with a token.
_NETWORK_FAILURES = {
    "ConnectError": "no connection could be made (is the address right, is it up?)",
    "ReadError": "the connection broke while it answered",
    "WriteError": "the connection broke while the request was sent",
    "RemoteProtocolError": "it closed the connection before answering",
    "ProxyError": "the proxy refused the connection",
}


def retry_after_seconds(response: httpx.Response, *, now: float | None = None) -> float | None:
    """Parse ``Retry-After`` (seconds or HTTP date) or ``retry-after-ms``; None if absent."""
    raw_ms = response.headers.get("retry-after-ms")
    if raw_ms:
        with contextlib.suppress(ValueError):
            value = float(raw_ms) / 1000.0
            if math.isfinite(value):
                return max(0.0, value)
    raw = response.headers.get("retry-after")
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        return max(0.0, when - (time.time() if now is None else now))
    return max(0.0, value) if math.isfinite(value) else None


def error_text(response: httpx.Response, *, limit: int = 500) -> str:
    """The most useful human text of an error response, whatever envelope the
    provider uses (``{"error": {"message"}}``, ``{"detail": …}``, ``{"message"}``,
    plain text). Never raises."""
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        return response.text[:limit].strip() or response.reason_phrase
    parts: list[str] = []

    def walk(node: Json) -> None:
        if isinstance(node, str):
            parts.append(node)
        elif isinstance(node, Mapping):
            for key in ("code", "error_code", "type", "message", "error", "detail"):
                if key in node:
                    walk(node[key])

    walk(body)
    text = ": ".join(dict.fromkeys(p for p in parts if p)) or response.text
    return text[:limit]


@contextlib.contextmanager
def provider_http_errors(provider: str, *, request_id_header: str | None = None) -> Iterator[None]:
    """Translate httpx failures into the stenod error taxonomy, once, at the edge.

    401/403 → AuthError; 408, 429 and 5xx → RetryableError (with Retry-After);
    other 4xx → PermanentError carrying the provider's message and request id;
    timeouts, network errors, malformed answers and unusable URLs → RetryableError.
    """
    try:
        yield
    except httpx.HTTPStatusError as exc:
        response = exc.response
        code = response.status_code
        detail = error_text(response)
        rid = response.headers.get(request_id_header) if request_id_header else None
        suffix = f" (request id {rid})" if rid else ""
        if code in (401, 403):
            raise AuthError(
                f"{provider} rejected the API key ({code}: {detail}); check [providers.{provider}] "
                f"api_key or $CREDENTIALS_DIRECTORY/{provider}.api_key{suffix}"
            ) from exc
        if code in (408, 429) or code >= 500:
            raise RetryableError(
                f"{provider} answered {code}: {detail}{suffix}",
                retry_after=retry_after_seconds(response),
                code=f"http_{code}",
            ) from exc
        raise PermanentError(f"{provider} refused the request ({code}): {detail}{suffix}", code=f"http_{code}") from exc
    except httpx.TimeoutException as exc:
        raise RetryableError(f"{provider} did not answer in time ({type(exc).__name__})", code="timeout") from exc
    except (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError) as exc:
        why = _NETWORK_FAILURES.get(type(exc).__name__, "the connection failed")
        raise RetryableError(f"{provider} unreachable: {why} ({type(exc).__name__})", code="network") from exc
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        # A URL built from the provider's own answer (a job id, a presigned URL) that cannot be
        # requested. Left out of the message: a presigned URL is a credential.
        raise RetryableError(
            f"{provider} sent an unusable address ({type(exc).__name__})", code="malformed_response"
        ) from exc
    except ValueError as exc:
        # Malformed JSON (json.JSONDecodeError) or a response body of the wrong shape:
        # providers sometimes answer garbage during incidents; try again later.
        raise RetryableError(f"{provider} sent a malformed answer: {exc}", code="malformed_response") from exc
