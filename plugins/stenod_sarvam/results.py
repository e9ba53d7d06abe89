"""Sarvam job status → stenod Status; Sarvam result JSON → the normalised Transcript."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from stenod.provider import ErrorInfo, ItemStatus, Json, RemoteState, Segment, Status, Transcript

from .api import JobStatus, TaskDetail

_STATES = {
    "accepted": RemoteState.PENDING,
    "pending": RemoteState.PENDING,
    "running": RemoteState.RUNNING,
    "completed": RemoteState.DONE,
    # Named once in Sarvam's reference but absent from the JobState enum: handle it anyway.
    "partiallycompleted": RemoteState.DONE,
}


def remote_state(job: JobStatus) -> RemoteState:
    """Map ``job_state``. A failed job that reports per-file details is DONE, so every
    file gets its own error (and any file that did succeed is still fetched); unknown
    states mean "keep waiting"."""
    state = job.job_state.strip().lower().replace(" ", "").replace("_", "")
    if state == "failed":
        return RemoteState.DONE if job.job_details else RemoteState.FAILED
    return _STATES.get(state, RemoteState.RUNNING)


def detail_by_input(job: JobStatus) -> dict[str, TaskDetail]:
    """``job_details`` keyed by the uploaded file name."""
    return {ref.file_name: detail for detail in job.job_details or () for ref in detail.inputs or ()}


def file_error(name: str, detail: TaskDetail | None) -> ErrorInfo | None:
    """None if the file succeeded, else why it did not."""
    if detail is None:
        return ErrorInfo(code="sarvam_no_result", message=f"sarvam reported no result for {name}")
    if detail.state == "Success" and detail.outputs:
        return None
    reason = "; ".join(x for x in (detail.exception_name, detail.error_message) if x) or "no reason given"
    return ErrorInfo(code="sarvam_file_failed", message=f"sarvam could not process {name}: {detail.state}: {reason}")


def status_of(job: JobStatus, files: Sequence[tuple[str, str]]) -> Status:
    """The dispatcher's view of ``job``; ``files`` are (item id, uploaded name) pairs."""
    state = remote_state(job)
    total = job.total_files or len(files)
    finished = (job.successful_files_count or 0) + (job.failed_files_count or 0)
    progress = 1.0 if state is RemoteState.DONE else (min(1.0, finished / total) if total else None)
    if state is RemoteState.FAILED:
        reason = job.error_message or "no reason given"
        error = ErrorInfo(code="sarvam_job_failed", message=f"sarvam job {job.job_id} failed: {reason}")
        return Status(state, progress=progress, error=error)
    items: tuple[ItemStatus, ...] = ()
    if state is RemoteState.DONE:
        details = detail_by_input(job)
        items = tuple(
            ItemStatus(item_id, RemoteState.FAILED if err else RemoteState.DONE, err)
            for item_id, name in files
            for err in (file_error(name, details.get(name)),)
        )
    return Status(state, progress=progress, items=items)


class _Doc(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Timestamps(_Doc):
    words: list[str]
    start_time_seconds: list[float]
    end_time_seconds: list[float]


class _Entry(_Doc):
    transcript: str
    start_time_seconds: float
    end_time_seconds: float
    speaker_id: str | None = None

    @field_validator("speaker_id", mode="before")
    @classmethod
    def _as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) else value


class _Diarized(_Doc):
    entries: list[_Entry]


class ResultDoc(_Doc):
    """One downloaded result file (same shape as the synchronous STT answer)."""

    transcript: str
    language_code: str | None = None
    timestamps: _Timestamps | None = None
    diarized_transcript: _Diarized | None = None


def transcript_of(data: Json, *, job_id: str, language: str | None, duration: float | None = None) -> Transcript:
    """Normalise a parsed result file. Diarized entries become speaker-labelled
    segments; without diarization the timestamp chunks become segments. ``duration``
    (the local probe) wins over the last segment end.

    Raises ValueError if ``data`` is not a result document.
    """
    try:
        doc = ResultDoc.model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"not a Sarvam result document ({exc.error_count()} problems)") from exc
    if doc.diarized_transcript and doc.diarized_transcript.entries:
        segments = [
            Segment(e.start_time_seconds, e.end_time_seconds, e.transcript.strip(), speaker=e.speaker_id)
            for e in doc.diarized_transcript.entries
        ]
    elif doc.timestamps:
        ts = doc.timestamps
        segments = [
            Segment(start, end, text.strip())
            for text, start, end in zip(ts.words, ts.start_time_seconds, ts.end_time_seconds, strict=False)
        ]
    else:
        segments = []
    segments.sort(key=lambda s: (s.start, s.end))
    return Transcript(
        text=doc.transcript.strip(),
        language=doc.language_code or (None if language in (None, "auto", "unknown") else language),
        duration=duration if duration is not None else max((s.end for s in segments), default=None),
        segments=tuple(segments),
        provider="sarvam",
        provider_job_id=job_id,
    )
