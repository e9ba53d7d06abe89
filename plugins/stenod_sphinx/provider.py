"""``SphinxProvider``: offline English transcription with PocketSphinx, no account needed.

The engine is local and synchronous, so the batch-job protocol collapses: ``submit``
does the whole recognition (in worker processes, never on the event loop) and returns
the results inside the handle; ``poll`` answers DONE; ``fetch`` unpacks the handle.
Nothing remote happens, so there is nothing to checkpoint: after a crash ``submit``
simply recognises the file again.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, ClassVar, Self

import httpx
import structlog
from pydantic import Field, model_validator

from stenod.provider import (
    Batch,
    BatchItem,
    ErrorInfo,
    Handle,
    ItemResult,
    Limits,
    NoOptions,
    PermanentError,
    ProviderSettings,
    RemoteState,
    Status,
    StepContext,
    Task,
    Transcript,
)
from stenod_sphinx.pool import WorkerPool

__all__ = ["SphinxProvider", "SphinxSettings"]

log = structlog.get_logger("stenod_sphinx")

FORMATS = frozenset({"wav", "flac", "ogg", "oga", "opus", "mp3", "m4a", "aac", "mp4", "webm"})
# The model is US English; other English accents are recognised, less accurately.
LANGUAGES = frozenset({"en", "en-US", "en-GB", "en-AU", "en-CA", "en-IN"})


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class SphinxSettings(ProviderSettings):
    """``[providers.sphinx]``: the engine runs locally, so only capacity and timeouts."""

    workers: int = Field(default_factory=_cpus, ge=1, description="recognition processes (one per core)")
    max_concurrent_jobs: int = Field(default=0, ge=0, description="0: same as workers")
    timeout_factor: float = Field(
        default=10.0, gt=0, description="a worker may take this many times the audio's length"
    )
    timeout_grace_seconds: float = Field(default=60.0, gt=0, description="added to every time budget")
    max_piece_seconds: float = Field(
        default=30.0, ge=5, le=600, description="longest stretch of speech decoded as one piece"
    )

    @model_validator(mode="after")
    def _one_job_per_worker(self) -> Self:
        if self.max_concurrent_jobs == 0:
            self.max_concurrent_jobs = self.workers
        return self


class SphinxProvider:
    """Offline transcription (US English) in local worker processes."""

    name: ClassVar[str] = "sphinx"
    Settings: ClassVar[type[ProviderSettings]] = SphinxSettings
    Options: ClassVar[type[NoOptions]] = NoOptions
    limits = Limits(
        tasks=frozenset({Task.TRANSCRIBE}),
        formats=FORMATS,
        max_files=1,  # one file per provider job: files run in parallel across workers
        min_poll_seconds=0.0,
        languages=LANGUAGES,
    )

    def __init__(self, settings: ProviderSettings, http: httpx.AsyncClient | None = None) -> None:
        self.settings = (
            settings if isinstance(settings, SphinxSettings) else SphinxSettings.model_validate(settings.model_dump())
        )
        self._pool = WorkerPool(
            workers=self.settings.workers,
            max_piece_seconds=self.settings.max_piece_seconds,
            timeout_factor=self.settings.timeout_factor,
            grace_seconds=self.settings.timeout_grace_seconds,
        )

    def worker_pids(self) -> list[int]:
        """Process ids of the live recognition workers."""
        return self._pool.worker_pids()

    async def submit(self, batch: Batch, ctx: StepContext) -> Handle:
        """Recognise every file of the batch and return the results as the handle.

        Raises PermanentError (code ``empty_file``, ``not_audio``, ``corrupt_audio``,
        ``no_audio_stream``, ``input_missing``, ``input_changed``, …) when the only file
        cannot be transcribed; with several files such failures become item errors.
        Raises RetryableError when a worker crashed, hung or the daemon is stopping.
        """
        if batch.task is not Task.TRANSCRIBE:
            raise PermanentError(f"sphinx can only transcribe, not {batch.task}", code="unsupported_task")
        results: list[dict[str, Any]] = []
        count = len(batch.items)
        for index, item in enumerate(batch.items):

            def progress(fraction: float, index: int = index) -> None:
                ctx.progress((index + fraction) / count)

            outcome = await self._pool.transcribe(item, progress)
            results.append(self._result(batch, item, outcome))
        ctx.progress(1.0)
        return {"results": results}

    def _result(self, batch: Batch, item: BatchItem, outcome: Mapping[str, Any]) -> dict[str, Any]:
        if "error" in outcome:
            error = ErrorInfo.from_json(outcome["error"])
            if len(batch.items) == 1:
                raise PermanentError(error.message, code=error.code, hint=error.hint)
            return {"item_id": item.item_id, "error": error.to_json()}
        if outcome.get("cancelled"):
            raise PermanentError(f"recognition of {item.path} was cancelled", code="cancelled")
        warnings = list(outcome.get("warnings") or ())
        for warning in warnings:
            log.warning("sphinx.audio_damaged", batch_id=batch.batch_id, file=str(item.path), detail=warning)
        return {"item_id": item.item_id, "transcript": outcome["transcript"], "warnings": warnings}

    async def poll(self, handle: Handle) -> Status:
        """A sphinx job is finished by the time it has a handle."""
        return Status(RemoteState.DONE, progress=1.0)

    async def fetch(self, handle: Handle) -> Sequence[ItemResult]:
        """The results carried in the handle, one per file."""
        results = []
        for entry in handle.get("results") or ():
            if entry.get("error") is not None:
                results.append(ItemResult(entry["item_id"], error=ErrorInfo.from_json(entry["error"])))
            else:
                transcript = Transcript.from_json(entry["transcript"])
                results.append(ItemResult(entry["item_id"], transcript=transcript))
        return results

    async def cancel(self, handle: Handle) -> None:
        """Nothing to cancel: a handle exists only once recognition has finished.
        (Cancelling a running ``submit`` stops its worker at the next heartbeat.)"""

    async def aclose(self) -> None:
        """Stop the worker processes. Idempotent; the daemon calls it at shutdown."""
        await self._pool.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
