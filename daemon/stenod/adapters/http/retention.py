"""Results nobody fetched: the outputs of HTTP uploads (``state_dir/results/<id>``, and the
page's kept uploads ``state_dir/uploads/<id>``) stay ``[http] keep_results_days`` after
their job ends, then go with the job's rows; so do voice commands kept from the Wyoming
listener (``[wyoming] keep``), which have rows only.

In the journal's order, oldest first, one job at a time: its folder is removed, then its
rows; a crash between the two leaves rows whose files are gone, which the next sweep
forgets. A job older than that answers 410 (:func:`gone`), whether or not the sweep has
reached it yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import structlog
from ulid import ULID

from stenod.journal import FinishedJob, Journal

__all__ = ["ResultsKeeper", "gone_message"]

log = structlog.get_logger("stenod.results")

_PAGE = 100


class Counts(Protocol):
    def results_removed(self, jobs: int, removed_bytes: int) -> None: ...


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def gone_message(job_id: str, keep_days: float, finished_at: str | None) -> str:
    """What a client asking for a job past its keep time is told (410)."""
    when = f"ended at {finished_at}" if finished_at else "is older than that"
    return (
        f"job {job_id} {when}; the jobs of uploads are kept {keep_days:g} days after they end "
        "([http] keep_results_days), then removed with their files and results"
    )


class ResultsKeeper:
    """Removes HTTP upload jobs ``keep_days`` after they end: files first, then rows."""

    def __init__(
        self,
        journal: Journal,
        state_dir: Path,
        *,
        keep_days: float,
        metrics: Counts | None = None,
        interval_seconds: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._journal = journal
        self._roots = (state_dir / "results", state_dir / "uploads")
        self._spool = state_dir / "spool"
        self.keep_seconds = keep_days * 86400
        self.keep_days = keep_days
        self._metrics = metrics
        # Every hour, or four times within a shorter keep time.
        self._interval = min(interval_seconds, self.keep_seconds / 4)
        self._clock = clock

    def cutoff(self) -> str:
        """Jobs that ended before this time (ISO, the journal's format) are past keeping."""
        return _iso(self._clock() - self.keep_seconds)

    def past_keeping(self, job_id: str, finished_at: str | None) -> bool:
        """A finished job (``finished_at``), or a job no longer in the journal whose id was
        made before the keep time (job ids are ULIDs: they carry their creation time)."""
        if finished_at is not None:
            return finished_at < self.cutoff()
        try:
            made = ULID.from_str(job_id).timestamp
        except ValueError:
            return False
        return made < self._clock() - self.keep_seconds

    async def run(self, stopping: asyncio.Event) -> None:
        """Sweep at start and every ``interval_seconds`` (at most a quarter of the keep
        time) until ``stopping``."""
        while not stopping.is_set():
            await self.sweep()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await stopping.wait()

    async def sweep(self) -> int:
        """Remove every job past keeping; the number removed."""
        cutoff, after, removed, removed_bytes = self.cutoff(), "", 0, 0
        while page := await self._journal.finished_http_jobs(cutoff, after=after, limit=_PAGE):
            for job in page:
                folder = self._folder(job)
                if folder is not None:
                    size = await asyncio.to_thread(self._remove, folder)
                elif job.source == "wyoming":
                    size = 0  # a voice command: its transcript is in its rows, it has no files
                else:
                    continue  # outputs beside a path input: the client's files, not ours
                if await self._journal.forget_job(job.job_id):
                    removed += 1
                    removed_bytes += size
                    log.info(
                        "results.removed",
                        job_id=job.job_id,
                        finished_at=job.finished_at,
                        folder=str(folder),
                        bytes=size,
                        keep_days=self.keep_days,
                    )
            after = page[-1].job_id
        if removed and self._metrics is not None:
            self._metrics.results_removed(removed, removed_bytes)
        return removed

    def _folder(self, job: FinishedJob) -> Path | None:
        if not job.output_dir:
            return None
        folder = Path(job.output_dir)
        if not any(folder.parent == root for root in self._roots):
            return None
        return folder

    def _remove(self, folder: Path) -> int:
        """Remove an upload's folder (and a spool folder left by a crash); its bytes."""
        size = 0
        for target in (folder, self._spool / folder.name):
            if target.is_dir() and not target.is_symlink():
                size += sum(p.lstat().st_size for p in target.rglob("*") if p.is_file() and not p.is_symlink())
                shutil.rmtree(target, ignore_errors=True)
        return size
