"""``WhisperProvider``: offline transcription and speech → English translation with
faster-whisper, no account needed.

The engine is local and synchronous, so the batch-job protocol collapses: ``submit``
transcribes the file (in a worker process, never on the event loop) and returns the
result inside the handle; ``poll`` answers DONE; ``fetch`` unpacks the handle. Nothing
remote happens, so there is nothing to checkpoint: after a crash ``submit`` simply runs
the file again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

import httpx
import structlog

from stenod.provider import (
    Batch,
    BatchItem,
    ConfigError,
    ErrorInfo,
    Handle,
    ItemResult,
    Json,
    Limits,
    LiveAudio,
    PermanentError,
    ProviderSettings,
    RemoteState,
    Segment,
    StartContext,
    Status,
    StepContext,
    Task,
    Transcript,
)
from stenod_whisper import diarization
from stenod_whisper.languages import ENGLISH, LANGUAGES, language_to_decode
from stenod_whisper.live import BATCH_NICENESS, LiveEngine
from stenod_whisper.model import BUNDLED, ModelError, folder_model, is_model_name
from stenod_whisper.pool import EnginePool
from stenod_whisper.prepare import Engine, prepare
from stenod_whisper.settings import WhisperOptions, WhisperSettings, cpu_count

__all__ = ["WhisperProvider"]

log = structlog.get_logger("stenod_whisper")

FORMATS = frozenset(
    {"wav", "flac", "ogg", "oga", "opus", "mp3", "m4a", "aac", "mp4", "webm", "mka", "mkv", "mov", "wma", "aiff"}
    | {"aif", "amr", "3gp", "mpga", "mpeg", "caf", "ac3", "spx"}
)


class WhisperProvider:
    """Offline speech recognition in local worker processes (faster-whisper, CTranslate2)."""

    name: ClassVar[str] = "whisper"
    Settings: ClassVar[type[ProviderSettings]] = WhisperSettings
    Options: ClassVar[type[WhisperOptions]] = WhisperOptions
    limits = Limits(
        tasks=frozenset({Task.TRANSCRIBE, Task.TRANSLATE}),
        formats=FORMATS,
        max_files=1,  # one file per provider job: files run in parallel across workers
        min_poll_seconds=0.0,
        languages=frozenset(LANGUAGES),
        target_languages=frozenset({ENGLISH}),  # Whisper translates speech into English only
        diarization=diarization.available(),
        diarization_missing=None if diarization.available() else diarization.MISSING,
    )

    def __init__(self, settings: ProviderSettings, http: httpx.AsyncClient | None = None) -> None:
        self.settings = (
            settings if isinstance(settings, WhisperSettings) else WhisperSettings.model_validate(settings.model_dump())
        )
        self.engine: Engine | None = None
        self.max_concurrent_jobs = self.settings.max_concurrent_jobs
        self._pool: EnginePool | None = None
        self._engine_spec: dict[str, Any] = {}
        self._live: LiveEngine | None = None

    async def start(self, ctx: StartContext) -> None:
        """Get the model ready on disk and choose the device. Raises ConfigError (with what
        to do) for a missing or damaged bundled model, a folder that holds none, or a model
        name that is neither cached nor downloadable."""
        s = self.settings
        try:
            self.engine = engine = await prepare(
                model=s.model, cache=self.model_cache(ctx.state_dir), device=s.device, compute_type=s.compute_type
            )
        except ModelError as exc:
            raise ConfigError(str(exc)) from exc
        gpu = engine.device == "cuda"
        workers = s.workers or (1 if gpu else cpu_count())
        threads = s.cpu_threads or max(1, cpu_count() // workers)
        self.max_concurrent_jobs = s.max_concurrent_jobs or workers
        if not engine.model.multilingual:
            self.limits = Limits(
                tasks=frozenset({Task.TRANSCRIBE}),
                formats=FORMATS,
                max_files=1,
                min_poll_seconds=0.0,
                languages=frozenset({ENGLISH}),
                diarization=self.limits.diarization,
                diarization_missing=self.limits.diarization_missing,
            )
        self._engine_spec = {
            "path": engine.model.path,
            "device": engine.device,
            "device_index": s.device_index,
            "compute_type": engine.compute_type,
            "cpu_threads": threads,
            "cache": str(self.model_cache(ctx.state_dir)),  # where diarization keeps its exported model
        }
        self._pool = EnginePool(
            engine=dict(self._engine_spec),
            workers=workers,
            idle_unload_seconds=s.idle_unload_seconds,
            stall_seconds=s.stall_timeout_seconds,
        )
        log.info(
            "whisper.ready",
            model=engine.model.name,
            path=engine.model.path,
            multilingual=engine.model.multilingual,
            device=engine.device,
            compute_type=engine.compute_type,
            workers=workers,
            cpu_threads=threads,
        )

    def model_cache(self, state_dir: Path) -> Path:
        return self.settings.model_dir or state_dir / "models"

    def describe(self, ctx: StartContext) -> Mapping[str, Json]:
        """The model, its languages, the device and compute type (for ``stenod providers``)."""
        s = self.settings
        engine = self.engine
        cache = self.model_cache(ctx.state_dir)
        model: dict[str, Json]
        if engine is not None:
            model = engine.model.to_json()
        elif not s.model:
            path = cache / BUNDLED.folder
            model = {
                "name": f"{BUNDLED.name} (bundled)",
                "path": str(path) if path.is_dir() else f"{path} (assembled at the first start)",
                "size_bytes": BUNDLED.size,
                "multilingual": True,
            }
        elif is_model_name(s.model):
            model = {"name": s.model, "path": f"downloaded into {cache}", "multilingual": not s.model.endswith(".en")}
        else:
            try:
                model = folder_model(Path(s.model)).to_json()
            except ModelError as exc:
                model = {"name": s.model, "error": str(exc)}
        multilingual = bool(model.get("multilingual"))
        return {
            "model": model,
            "languages": sorted(LANGUAGES) if multilingual else [ENGLISH],
            "translates_to": [ENGLISH] if multilingual else [],
            "device": engine.device if engine else s.device,
            "compute_type": engine.compute_type if engine else s.compute_type,
            "workers": s.workers
            or ("one per core on a CPU, one on a GPU" if engine is None else self.max_concurrent_jobs),
        }

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (diagnostics and tests)."""
        return self._pool.worker_pids() if self._pool else []

    def worker_of(self, item_id: str) -> int | None:
        """The process id of the worker transcribing ``item_id`` now (diagnostics and tests)."""
        return self._pool.worker_of(item_id) if self._pool else None

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory (worker processes running) now."""
        return self._pool is not None and self._pool.loaded

    async def start_live(self, workers: int = 1) -> None:
        """Start the reserved workers for voice commands (the cores' threads shared among
        them: a lone command has the machine while it runs) and lower the batch workers'
        priority."""
        if self.engine is None or self._pool is None:
            raise PermanentError("the whisper provider was not started", code="internal_error")
        if self._live is None:
            threads = self.settings.cpu_threads or max(1, cpu_count() // workers)
            self._live = LiveEngine(
                {**self._engine_spec, "cpu_threads": threads},
                workers=workers,
                multilingual=self.engine.model.multilingual,
                beam_size=self.settings.beam_size,
                stall_seconds=self.settings.stall_timeout_seconds,
            )
            if self.engine.device == "cpu":
                self._pool.lower_priority(BATCH_NICENESS)
        await self._live.start()

    async def transcribe_live(
        self, audio: LiveAudio, on_segment: Callable[[Segment], None] | None = None
    ) -> Transcript:
        """Transcribe a voice command on a reserved worker (see :mod:`stenod_whisper.live`)."""
        if self._live is None:
            await self.start_live()
        assert self._live is not None
        return await self._live.transcribe(audio, on_segment)

    def live_worker_pids(self) -> list[int]:
        """The reserved workers' process ids, while they run (diagnostics and tests)."""
        return self._live.worker_pids() if self._live else []

    def request(self, batch: Batch) -> dict[str, Any]:
        """What a worker needs for the batch's files. Raises PermanentError for a language
        or task this model cannot do, before any work starts."""
        model = self.engine.model if self.engine else None
        multilingual = model is None or model.multilingual
        options = batch.options if isinstance(batch.options, WhisperOptions) else WhisperOptions()
        if batch.task is Task.TRANSLATE:
            if not multilingual:
                raise PermanentError(
                    f"the model {model.name if model else ''} is English-only and cannot translate",
                    code="unsupported_task",
                    hint="Leave [providers.whisper] model empty for the bundled multilingual model.",
                )
            wrong = [t for t in batch.target_languages if not self.limits.accepts(t, target=True)]
            if wrong:
                raise PermanentError(
                    f"whisper translates speech into English only, not {', '.join(wrong)}",
                    code="unsupported_language",
                    hint="Transcribe with whisper and translate the transcript with a translating provider "
                    "(output.then_translate_to / then_translate_to in a watch rule).",
                )
        code = language_to_decode(
            batch.language,
            multilingual=multilingual,
            model=model.name if model else "whisper",
            hint="Use a multilingual model (model empty for the bundled base, or e.g. 'small').",
        )
        diarize = batch.diarization
        if diarize is not None and not self.limits.diarization:
            raise PermanentError(self.limits.diarization_missing or diarization.MISSING, code="diarization_unavailable")
        s = self.settings
        words = s.word_timestamps if options.word_timestamps is None else options.word_timestamps
        return {
            "task": str(batch.task),
            "language": code,
            "language_tag": batch.language,
            "beam_size": options.beam_size or s.beam_size,
            "vad_filter": s.vad_filter if options.vad_filter is None else options.vad_filter,
            "word_timestamps": words or diarize is not None,  # speakers are given word by word
            "initial_prompt": options.initial_prompt,
            "temperature": options.temperature,
            "hotwords": options.hotwords,
            "detect_only": options.detect_language_only,
            "batch_size": s.batch_size,
            "batch_min_seconds": s.batch_min_seconds,
            "max_audio_seconds": s.max_audio_seconds,
            "diarization": diarize.to_json() if diarize is not None else None,
        }

    async def submit(self, batch: Batch, ctx: StepContext) -> Handle:
        """Transcribe every file of the batch and return the results as the handle.

        Raises PermanentError (``empty_file``, ``not_audio``, ``corrupt_audio``,
        ``unsupported_language``, ``input_missing``, …) when the only file cannot be
        transcribed; with several files such failures become item errors. Raises
        RetryableError when a worker crashed, hung, or the daemon is stopping.
        """
        if self._pool is None:
            raise PermanentError("the whisper provider was not started", code="internal_error")
        request = self.request(batch)
        results: list[dict[str, Any]] = []
        count = len(batch.items)
        for index, item in enumerate(batch.items):

            def on_message(message: dict[str, Any], index: int = index, item_id: str = item.item_id) -> None:
                if message["kind"] == "segment":
                    ctx.progress((index + message["done"]) / count)
                    piece = message["segment"]
                    ctx.segment(item_id, Segment(piece["start"], piece["end"], piece["text"]))
                elif message["kind"] == "started":
                    ctx.progress(index / count)

            outcome = await self._pool.transcribe(item, request, on_message)
            results.append(self._result(batch, item, outcome))
        ctx.progress(1.0)
        return {"results": results}

    def _result(self, batch: Batch, item: BatchItem, outcome: Mapping[str, Any]) -> dict[str, Any]:
        if "error" in outcome:
            error = ErrorInfo.from_json(outcome["error"])
            if len(batch.items) == 1:
                raise PermanentError(error.message, code=error.code, hint=error.hint)
            return {"item_id": item.item_id, "error": error.to_json()}
        warnings = list(outcome.get("warnings") or ())
        for warning in warnings:
            log.warning("whisper.audio_damaged", batch_id=batch.batch_id, file=str(item.path), detail=warning)
        return {"item_id": item.item_id, "transcript": outcome["transcript"], "warnings": warnings}

    async def poll(self, handle: Handle) -> Status:
        """A whisper job is finished by the time it has a handle."""
        return Status(RemoteState.DONE, progress=1.0)

    async def fetch(self, handle: Handle) -> Sequence[ItemResult]:
        """The results carried in the handle, one per file."""
        results = []
        for entry in handle.get("results") or ():
            if entry.get("error") is not None:
                results.append(ItemResult(entry["item_id"], error=ErrorInfo.from_json(entry["error"])))
            else:
                results.append(ItemResult(entry["item_id"], transcript=Transcript.from_json(entry["transcript"])))
        return results

    async def cancel(self, handle: Handle) -> None:
        """Nothing to cancel: a handle exists only once transcription has finished.
        (Cancelling a running ``submit`` stops its worker.)"""

    async def aclose(self) -> None:
        """Stop the worker processes. Idempotent; the daemon calls it at shutdown."""
        if self._live is not None:
            await self._live.aclose()
        if self._pool is not None:
            await self._pool.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
