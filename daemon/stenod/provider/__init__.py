"""The public plugin API: the only stenod module a provider plugin imports.

A provider is a class registered under the entry-point group ``stenod.providers``.
The daemon builds one instance per configured provider with
``cls(settings, http)`` and drives every provider job through
``submit → poll → fetch`` (and ``cancel`` on request). Everything a plugin needs
(value types, the error taxonomy, the settings base model, small helpers for HTTP
error mapping, safe reading of input files and uploading them without reading on the
event loop, decoding untrusted media in a memory-capped child process: :class:`MediaChild`)
is defined or re-exported here.

The names are defined in small modules (:mod:`stenod.provider.jobs`: a provider job's
values; :mod:`stenod.provider.results`: transcripts and results; :mod:`stenod.provider.http`: HTTP
helpers; :mod:`stenod.errors`: the error tree) and gathered here: a plugin imports them
from ``stenod.provider`` only.

Stability: names in ``__all__`` are the contract; ``tests/unit/test_plugins.py``
pins them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

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
from stenod.provider.http import error_text, provider_http_errors, retry_after_seconds
from stenod.provider.jobs import (
    Batch,
    BatchItem,
    Handle,
    ItemStatus,
    Json,
    RemoteState,
    Status,
    Task,
    audio_too_long,
    finished,
    is_finished,
)
from stenod.provider.media_child import MediaChild
from stenod.provider.results import Cost, ItemResult, Segment, Transcript, TranslatedDocument, Word
from stenod.provider.uploads import FileUpload, MultipartBody, file_chunks
from stenod.speakers import Diarization, KnownSpeaker, Speaker, Voiceprint
from stenod.voice.live import LiveAudio, LiveTranscriber

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
    "audio_too_long",
    "error_text",
    "file_chunks",
    "finished",
    "is_finished",
    "language_name",
    "provider_http_errors",
    "retry_after_seconds",
]


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
