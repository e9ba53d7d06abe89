"""Free space on the filesystems stenod writes to: the state directory's (the journal,
uploads and their results) and every output folder's, and the journal's own word that its
writes wait for space (a PostgreSQL database's disk is not one stenod can survey).

A filesystem with less than ``min_free_bytes`` free counts as full: ``/healthz`` names it
and turns 503, new jobs and uploads are refused with 507 while it is the state directory's
or the journal's. Below
``warn_free_bytes`` ``/healthz`` stays 200 and warns. Writes that fail for want of space
wait and are retried (the journal's and the outputs'); nothing here stops them.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DiskSpace", "Filesystem"]


@dataclass(frozen=True, slots=True)
class Filesystem:
    """One filesystem stenod writes to, named by the folders on it."""

    folders: tuple[str, ...]
    free_bytes: int
    full: bool
    low: bool

    def to_json(self) -> dict[str, Any]:
        return {"folders": list(self.folders), "free_bytes": self.free_bytes}


class DiskSpace:
    """Surveys the filesystems under ``folders()`` (state directory first)."""

    def __init__(
        self,
        state_dir: Path,
        folders: Callable[[], Iterable[Path]],
        *,
        min_free_bytes: int,
        warn_free_bytes: int,
        journal_full: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._state_dir = state_dir
        self._folders = folders
        self._journal_full = journal_full
        self._min = min_free_bytes
        self._warn = max(warn_free_bytes, min_free_bytes)

    def survey(self) -> list[Filesystem]:
        """Each filesystem once (by device), with its free space. Blocking: a thread's work."""
        found: dict[int, tuple[list[str], int]] = {}
        for folder in [self._state_dir, *self._folders()]:
            existing = _nearest_existing(folder)
            try:
                device = os.stat(existing).st_dev
                free = _free_bytes(existing)
            except OSError:
                continue
            names, _ = found.setdefault(device, ([], free))
            if str(folder) not in names:
                names.append(str(folder))
        return [
            Filesystem(tuple(names), free, full=free < self._min, low=free < self._warn)
            for names, free in found.values()
        ]

    def state_full(self) -> str | None:
        """What has no room for a new job (the state directory's filesystem: journal, uploads;
        or the journal's database), None when both have. Blocking."""
        if (journal := self._journal_full()) is not None:
            return f"the journal at {journal}"
        try:
            full = _free_bytes(_nearest_existing(self._state_dir)) < self._min
        except OSError:
            return None
        return f"the filesystem of {self._state_dir}" if full else None

    async def check(self) -> dict[str, Any]:
        """``/healthz``'s ``disk``: not ok when a filesystem is full, a warning when one is low."""
        filesystems = await asyncio.to_thread(self.survey)
        full = [fs.to_json() for fs in filesystems if fs.full]
        if (journal := self._journal_full()) is not None:
            full.append({"folders": [], "journal": journal})
        low = [fs.to_json() for fs in filesystems if fs.low and not fs.full]
        report: dict[str, Any] = {"ok": not full}
        if full:
            report["full"] = full
            report["error"] = "no room to write: " + "; ".join(", ".join(f["folders"]) or f["journal"] for f in full)
        if low:
            report["low"] = low
            report["warning"] = f"less than {self._warn:,} bytes free: " + "; ".join(
                ", ".join(f["folders"]) for f in low
            )
        return report


def _free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest existing parent: an output folder made on first use is on
    its parent's filesystem until then."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")
