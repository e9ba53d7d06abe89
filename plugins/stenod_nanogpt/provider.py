"""The ``nanogpt`` provider: speech-to-text through NanoGPT's ``/api/transcribe``.

Synchronous models answer with the transcript, so ``submit`` does the work and returns
the results in the handle. Asynchronous models (Elevenlabs-STT) answer with a run whose
id and billing context are checkpointed at once, and ``poll`` asks for it. Recordings
over the direct-upload cap are transcoded and, if still too big, cut into pieces; each
piece is checkpointed on its own, and the pieces are stitched back into one transcript.
Measuring and transcoding decode an untrusted file: that runs in the core's memory-capped
child process (:class:`~stenod.provider.MediaChild`), never in the daemon, and stops at
``max_audio_seconds``.

Handle (and checkpoint) shape::

    {"items": [{"item_id": "…", "name": "call.wav", "pieces": [
        {"start": 0, "length": 480000, "result": {…}}      # sync model: finished
        {"start": 480000, "length": 1000, "run": {…}},      # async model: runId + context
        {"start": 481000, "length": 2000}]}]}               # not uploaded yet
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, ClassVar, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field

from stenod.provider import (
    AuthError,
    Batch,
    BatchItem,
    ErrorInfo,
    FileUpload,
    Handle,
    ItemResult,
    ItemStatus,
    Json,
    Limits,
    MediaChild,
    ProviderSettings,
    RemoteState,
    RetryableError,
    Status,
    StepContext,
    Task,
    finished,
    provider_http_errors,
)

from . import audio, preparation
from .api import NAME, NanoGptApi, TranscribeRequest, diarize_for
from .results import piece_result, stitch, total_cost

_T = TypeVar("_T")
_DEFAULT_BASE_URL = "https://nano-gpt.com/api"
_DIRECT_UPLOAD_CAP = 3_000_000  # documented as "3 MB"; the decimal reading is the safe one


class NanoGptSettings(ProviderSettings):
    """``[providers.nanogpt]``. ``base_url`` includes the ``/api`` prefix."""

    base_url: str | None = _DEFAULT_BASE_URL
    max_upload_bytes: int = Field(default=_DIRECT_UPLOAD_CAP, ge=16_384, le=_DIRECT_UPLOAD_CAP)
    # NanoGPT documents no maximum; each hour is billed and sent as about four 3 MB pieces.
    max_audio_seconds: float = Field(default=10_800.0, gt=0, description="longer files fail with too_long (3 h)")


class NanoGptOptions(BaseModel):
    """Per-job options. ``diarize`` and ``tag_audio_events`` only matter for Elevenlabs-STT."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(default="Whisper-Large-V3", min_length=1, max_length=100)
    diarize: bool = False
    tag_audio_events: bool = False


class NanoGptProvider:
    """NanoGPT speech-to-text, sync and async models, one recording per provider job."""

    name: ClassVar[str] = NAME
    Settings: ClassVar[type[ProviderSettings]] = NanoGptSettings
    Options: ClassVar[type[BaseModel]] = NanoGptOptions
    limits: Limits = Limits(
        tasks=frozenset({Task.TRANSCRIBE}),
        formats=frozenset(
            {"mp3", "wav", "m4a", "ogg", "oga", "opus", "aac", "flac", "webm", "mp4", "mka", "wma", "aiff"}
        ),
        max_files=1,
        min_poll_seconds=5.0,
        diarization=True,  # with Elevenlabs-STT (api.diarize_for)
    )

    def __init__(self, settings: ProviderSettings, http: httpx.AsyncClient) -> None:
        if not isinstance(settings, NanoGptSettings):
            settings = NanoGptSettings.model_validate(settings.model_dump())
        self._settings = settings
        self._http = http
        self.limits = dataclasses.replace(type(self).limits, max_audio_seconds=settings.max_audio_seconds)
        self._decoder = MediaChild(timeout_seconds=preparation.decode_timeout_seconds(settings.max_audio_seconds))
        # Results seen by poll, so fetch need not ask again (NanoGPT does not document
        # how long a finished run stays queryable). Lost on restart: fetch re-asks.
        self._finished: dict[str, dict[str, Json]] = {}

    async def submit(self, batch: Batch, ctx: StepContext) -> Handle:
        """Upload every piece not yet uploaded, checkpointing after each upload.

        Raises AuthError, PermanentError (402 balance, undecodable audio, 4xx),
        RetryableError (429 with Retry-After, 5xx, network).
        """
        api = self._api()
        options = batch.options if isinstance(batch.options, NanoGptOptions) else NanoGptOptions()
        diarize = diarize_for(options.model, options.diarize, batch.diarization)  # before any upload
        saved = {rec["item_id"]: rec for rec in (ctx.saved or {}).get("items", [])}
        records: list[dict[str, Json]] = [saved.get(item.item_id) or {} for item in batch.items]
        for index, item in enumerate(batch.items):
            if not records[index]:
                records[index] = await self._decode(
                    preparation.plan_upload, item, self._settings.max_upload_bytes, self._settings.max_audio_seconds
                )
            record = records[index]
            pending = [i for i, piece in enumerate(record["pieces"]) if not _uploaded(piece)]
            if not pending:
                continue
            with tempfile.TemporaryDirectory(prefix="stenod-nanogpt-") as tmp:
                files = await self._prepare_files(item, record, Path(tmp))
                for number in pending:
                    piece = record["pieces"][number]
                    request = TranscribeRequest(
                        audio=files[number],
                        model=options.model,
                        language=_language_code(batch.language),
                        minutes=piece["length"] / audio.SAMPLE_RATE / 60,
                        diarize=diarize,
                        tag_audio_events=options.tag_audio_events,
                    )
                    # Always a direct upload: the daemon has no public URL to offer for audioUrl. NanoGPT's
                    # docs only show async models with audioUrl; that they take multipart too is assumed (§11).
                    answer = await api.transcribe(request)
                    if answer.run is not None:
                        piece["run"] = dict(answer.run)
                    else:
                        with provider_http_errors(NAME):
                            piece["result"] = piece_result(answer.result or {})
                    await ctx.checkpoint({"items": [r for r in records if r]})
                    ctx.progress(_fraction_uploaded(records))
        handle: dict[str, Json] = {"items": records}
        synchronous = all("result" in piece for record in records for piece in record["pieces"])
        return finished(handle) if synchronous else handle

    async def poll(self, handle: Handle) -> Status:
        """Ask NanoGPT about every unfinished async run of the job."""
        api = self._api()
        statuses: list[ItemStatus] = []
        finished = total = 0
        for record in handle["items"]:
            error: ErrorInfo | None = None
            done = True
            for piece in record["pieces"]:
                total += 1
                outcome = piece.get("result") or await self._outcome(api, piece["run"], final=False)
                if outcome is None:
                    done = False
                elif "error" in outcome:
                    error = error or _item_error(record, outcome["error"])
                    finished += 1
                else:
                    finished += 1
            state = RemoteState.FAILED if error else RemoteState.DONE if done else RemoteState.RUNNING
            statuses.append(ItemStatus(record["item_id"], state, error))
        all_done = all(s.state is not RemoteState.RUNNING for s in statuses)
        return Status(
            state=RemoteState.DONE if all_done else RemoteState.RUNNING,
            progress=finished / total if total else 1.0,
            items=tuple(statuses),
        )

    async def fetch(self, handle: Handle) -> Sequence[ItemResult]:
        """One stitched transcript (with its summed cost) per recording."""
        api = self._api()
        results: list[ItemResult] = []
        for record in handle["items"]:
            outcomes = [
                piece.get("result") or await self._outcome(api, piece["run"], final=True) for piece in record["pieces"]
            ]
            for piece in record["pieces"]:
                if "run" in piece:
                    self._finished.pop(piece["run"]["runId"], None)
            failed = next((o["error"] for o in outcomes if o and "error" in o), None)
            if failed is not None:
                results.append(ItemResult(record["item_id"], error=_item_error(record, failed)))
                continue
            done = [o for o in outcomes if o is not None]
            runs = [piece.get("run") or {} for piece in record["pieces"]]
            pieces = [
                (_seconds(p["start"]), _seconds(p["start"] + p["length"]), o)
                for p, o in zip(record["pieces"], done, strict=True)
            ]
            run_ids = [r["runId"] for r in runs if "runId" in r]
            transcript = stitch(pieces, job_id=",".join(run_ids) or None)
            results.append(ItemResult(record["item_id"], transcript=transcript, cost=total_cost(done, runs)))
        return results

    async def aclose(self) -> None:
        """Stop the decoding child (the daemon is stopping)."""
        await asyncio.to_thread(self._decoder.close)

    async def cancel(self, handle: Handle) -> None:
        """NanoGPT has no way to cancel a run; the job simply stops being polled."""
        for record in handle["items"]:
            for piece in record["pieces"]:
                if "run" in piece:
                    self._finished.pop(str(piece["run"]["runId"]), None)

    def _api(self) -> NanoGptApi:
        if self._settings.api_key is None or not self._settings.api_key.get_secret_value():
            raise AuthError(
                "nanogpt has no API key; set [providers.nanogpt] api_key or $CREDENTIALS_DIRECTORY/nanogpt.api_key"
            )
        return NanoGptApi(
            self._http,
            self._settings.base_url or _DEFAULT_BASE_URL,
            self._settings.api_key.get_secret_value(),
            self._settings.request_timeout_seconds,
        )

    async def _outcome(self, api: NanoGptApi, run: Mapping[str, Json], *, final: bool) -> dict[str, Json] | None:
        """A run's result, ``{"error": …}`` if it failed, or None while it runs.

        With ``final`` (fetch), a run that is not finished is a retryable surprise.
        """
        run_id = str(run["runId"])
        if run_id in self._finished:
            return self._finished[run_id]
        body = await api.status(run)
        outcome: dict[str, Json] | None = None
        if body["status"] == "completed":
            with provider_http_errors(NAME):
                outcome = piece_result(body)
        elif body["status"] == "failed":
            outcome = {"error": str(body.get("error") or "no reason given")}
        if outcome is not None and not final:
            self._finished[run_id] = outcome
        if outcome is None and final:
            raise RetryableError(f"nanogpt run {run_id} is not finished yet", code="not_finished")
        return outcome

    async def _decode(self, fn: Callable[..., _T], item: BatchItem, *args: Any) -> _T:
        """``fn(item, *args)`` in the decoding child, from a worker thread."""
        return await asyncio.to_thread(self._decoder.call, fn, item, *args, label=item.name)

    async def _prepare_files(self, item: BatchItem, record: Mapping[str, Json], directory: Path) -> list[FileUpload]:
        """The upload of each piece: the input itself, or pieces encoded in the decoding child."""
        if record.get("original"):
            return [FileUpload(item.name, item.size, item.open)]
        pieces = [(p["start"], p["length"]) for p in record["pieces"]]
        paths = await self._decode(preparation.encode_upload, item, pieces, directory)
        stem = Path(item.name).stem or "audio"
        return [
            FileUpload(f"{stem}.part{n:03d}.mp3", path.stat().st_size, _file_opener(path))
            for n, path in enumerate(paths)
        ]


def _file_opener(path: Path) -> audio.Opener:
    def open_piece() -> IO[bytes]:
        return path.open("rb")

    return open_piece


def _seconds(samples: int) -> float:
    return round(samples / audio.SAMPLE_RATE, 3)


def _uploaded(piece: Mapping[str, Json]) -> bool:
    return "result" in piece or "run" in piece


def _fraction_uploaded(records: Sequence[Mapping[str, Json]]) -> float:
    pieces = [p for r in records if r for p in r["pieces"]]
    return sum(1 for p in pieces if _uploaded(p)) / len(pieces) if pieces else 1.0


def _item_error(record: Mapping[str, Json], reason: Json) -> ErrorInfo:
    return ErrorInfo(
        code="transcription_failed",
        message=f"nanogpt could not transcribe {record.get('name')}: {reason}",
    )


def _language_code(language: str | None) -> str | None:
    """NanoGPT wants ISO 639 codes (``hi``), not BCP 47 tags (``hi-IN``)."""
    if not language:
        return None
    return language.split("-")[0].split("_")[0].lower()
