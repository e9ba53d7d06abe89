"""Voice commands journaled (``[wyoming] keep = true``): each one answered becomes a job
that finished before it was recorded, with its transcript and no audio.

The command is answered first and recorded after, by the session that answered it (the
next command on that connection waits for the write, the person who spoke does not). The
job is one the job API, the page, the event relay and the results retention already know:
source ``wyoming``, one item whose input names the satellite, its outputs rendered from
the transcript when asked for. A journal that cannot take it loses the record, never the
answer: the error is logged and the listener goes on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import structlog

from stenod.errors import JournalError
from stenod.jobs import JobView
from stenod.journal import NewItem, NewJob
from stenod.provider import Transcript

__all__ = ["FinishedJobs", "HeardCommand", "KeptCommands"]

log = structlog.get_logger("stenod.voice")


@dataclass(frozen=True, slots=True)
class HeardCommand:
    """A voice command that was answered: by which provider, what was heard, from whom."""

    provider: str
    transcript: Transcript
    client: str  # the satellite's address
    audio_seconds: float


class FinishedJobs(Protocol):
    """The journal's side: record a job that finished before it was journaled."""

    async def record_finished_job(self, new: NewJob) -> JobView: ...


class ItemCounts(Protocol):
    def item_finished(self, provider: str, state: str, audio_seconds: float | None, cost: None) -> None: ...


class KeptCommands:
    """Records answered voice commands in the journal, counted as finished items."""

    def __init__(self, journal: FinishedJobs, metrics: ItemCounts | None = None) -> None:
        self._journal = journal
        self._metrics = metrics

    async def keep(self, heard: HeardCommand) -> JobView | None:
        """Commit the command as a succeeded job; None (and an error logged) when the
        journal cannot take it now."""
        transcript = heard.transcript
        item = NewItem(
            input=f"voice command from {heard.client}",
            name="voice-command",
            size=int(heard.audio_seconds * 32000),  # the PCM it was: 16 kHz, 16-bit, mono
            result={"transcript": transcript.to_json()},
        )
        new = NewJob(
            source="wyoming", task="transcribe", provider=heard.provider, items=[item], language=transcript.language
        )
        started = time.perf_counter()
        try:
            view = await self._journal.record_finished_job(new)
        except JournalError as exc:
            log.error("wyoming.command_not_kept", provider=heard.provider, error=str(exc))
            return None
        if self._metrics is not None:
            self._metrics.item_finished(heard.provider, "succeeded", heard.audio_seconds, None)
        log.info(
            "wyoming.command_kept",
            job_id=view.job_id,
            provider=heard.provider,
            journal_seconds=round(time.perf_counter() - started, 4),
        )
        return view
