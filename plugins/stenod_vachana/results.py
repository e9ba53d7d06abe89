"""Vachana status answers → stenod Status and per-file results (results come inline)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from stenod.provider import ErrorInfo, ItemResult, ItemStatus, RemoteState, Segment, Status, Transcript

from .api import FileResult, JobStatus

_WAITING = {"submitted": RemoteState.PENDING, "queued": RemoteState.PENDING, "pending": RemoteState.PENDING}


def remote_state(job: JobStatus) -> RemoteState:
    """Map ``status``. Finished states count only once ``results`` is present (the docs:
    "stop on completed or failed once results is filled"); a failed job with per-file
    results is DONE so each file keeps its own error; unknown states mean "keep waiting"."""
    status = job.status.strip().lower()
    if status == "completed":
        return RemoteState.DONE if job.results is not None else RemoteState.RUNNING
    if status == "failed":
        return RemoteState.DONE if job.results else RemoteState.FAILED
    return _WAITING.get(status, RemoteState.RUNNING)


def status_of(job: JobStatus, items: Sequence[ItemResult]) -> Status:
    """The dispatcher's view; ``items`` are the per-file results when the job is DONE."""
    state = remote_state(job)
    if state is RemoteState.FAILED:
        error = ErrorInfo(
            code="vachana_job_failed",
            message=f"vachana job {job.job_id} failed: {job.error or 'no reason given'}",
        )
        return Status(state, error=error)
    if state is RemoteState.DONE:
        per_item = tuple(
            ItemStatus(r.item_id, RemoteState.FAILED if r.error else RemoteState.DONE, r.error) for r in items
        )
        return Status(state, progress=1.0, items=per_item)
    progress = None if job.overall_progress is None else max(0.0, min(1.0, job.overall_progress / 100))
    return Status(state, progress=progress)


def item_results(
    job: JobStatus, files: Sequence[tuple[str, str, float | None]], language: str | None
) -> list[ItemResult]:
    """One result per (item id, uploaded name, probed duration), in order."""
    by_name = {r.filename: r for r in job.results or ()}
    return [
        _item_result(item_id, name, by_name.get(name), duration, job.job_id, language)
        for item_id, name, duration in files
    ]


def _item_result(
    item_id: str,
    name: str,
    result: FileResult | None,
    duration: float | None,
    job_id: str,
    language: str | None,
) -> ItemResult:
    if result is None:
        return ItemResult(
            item_id,
            error=ErrorInfo(code="vachana_no_result", message=f"vachana reported no result for {name}"),
        )
    if (result.status or "").lower() != "completed":
        reason = result.error or result.status or "no reason given"
        return ItemResult(
            item_id,
            error=ErrorInfo(code="vachana_file_failed", message=f"vachana could not process {name}: {reason}"),
        )
    segments = sorted(
        (
            Segment(
                s.start_time,
                s.end_time,
                s.text.strip(),
                speaker=s.speaker_id,
                confidence=s.confidence,
                extra={
                    k: v
                    for k, v in (
                        ("language_detected", s.language_detected),
                        ("sentiment", s.sentiment),
                        ("emotion", s.emotion),
                    )
                    if v is not None
                },
            )
            for s in result.segments or ()
        ),
        key=lambda s: (s.start, s.end),
    )
    detected = Counter(s.extra["language_detected"] for s in segments if "language_detected" in s.extra)
    specific = language if language and language != "auto" and "," not in language else None
    transcript = Transcript(
        text=(result.full_transcript or " ".join(s.text for s in segments)).strip(),
        language=specific or (detected.most_common(1)[0][0] if detected else None),
        duration=result.total_duration if result.total_duration is not None else duration,
        segments=tuple(segments),
        provider="vachana",
        provider_job_id=job_id,
    )
    return ItemResult(item_id, transcript=transcript)
