"""What can be decided before any upload: preflight checks of an item against a
provider's limits, and packing items into as few provider jobs as the limits allow."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from stenod.errors import ErrorInfo
from stenod.journal import OpenItem
from stenod.provider import Limits, Task
from stenod.who_spoke.diarization import unavailable_reason


@dataclass(frozen=True, slots=True)
class Preflight:
    error: ErrorInfo | None
    duration: float | None = None


def preflight(
    name: str, limits: Limits, item: OpenItem, probe: Callable[[Path], float | None], *, elsewhere: bool = False
) -> Preflight:
    """Everything that can be known before any upload: task, format, size, duration, that the
    file is still the one accepted. Runs in a worker thread. ``elsewhere``: the job was
    accepted by another instance, which numbers a shared mount's device differently (the
    inode, size and content are the same)."""
    if Task(item.task) not in limits.tasks:
        return Preflight(ErrorInfo("unsupported_task", f"{name} cannot {item.task}"))
    if item.diarization is not None and (reason := unavailable_reason(name, limits)) is not None:
        return Preflight(ErrorInfo("diarization_unavailable", reason))  # the provider changed since intake
    if item.path is None:
        return Preflight(ErrorInfo("input_missing", f"{item.input} has no local file"))
    path = Path(item.path)
    ext = path.suffix.lower().lstrip(".")
    if ext not in limits.formats:
        return Preflight(
            ErrorInfo(
                "unsupported_format",
                f"{path.name}: .{ext or '(none)'} files are not supported by {name}",
                hint=f"{name} accepts: {', '.join(sorted(limits.formats))}",
            )
        )
    try:
        st = path.lstat()
    except FileNotFoundError:
        return Preflight(ErrorInfo("input_missing", f"{path} was deleted before it could be processed"))
    except OSError as exc:
        return Preflight(ErrorInfo("input_unreadable", f"{path}: {exc.strerror}"))
    if item.inode is not None and (st.st_ino != item.inode or (not elsewhere and st.st_dev != item.device)):
        return Preflight(ErrorInfo("input_changed", f"{path} was replaced after it was accepted"))
    if st.st_size == 0:
        return Preflight(
            ErrorInfo(
                "empty_file",
                f"{path.name} is empty (0 bytes)",
                hint="Copy the complete recording into the folder again.",
            )
        )
    if limits.max_file_bytes is not None and st.st_size > limits.max_file_bytes:
        return Preflight(
            ErrorInfo(
                "over_limit",
                f"{path.name} is {st.st_size:,} bytes; {name} accepts at most {limits.max_file_bytes:,} bytes per file",
                hint="Split or compress the recording.",
            )
        )
    if limits.max_batch_bytes is not None and st.st_size > limits.max_batch_bytes:
        return Preflight(
            ErrorInfo(
                "over_limit",
                f"{path.name} is {st.st_size:,} bytes; {name} accepts at most {limits.max_batch_bytes:,} bytes per job",
            )
        )
    duration = None
    if limits.max_audio_seconds is not None:
        duration = probe(path)
        if duration is not None and duration > limits.max_audio_seconds:
            return Preflight(
                ErrorInfo(
                    "over_limit",
                    f"{path.name} lasts {duration:.0f} s; {name} accepts at most "
                    f"{limits.max_audio_seconds:.0f} s per file",
                    hint="Split the recording into shorter parts.",
                )
            )
    return Preflight(None, duration)


def pack(limits: Limits, items: Sequence[OpenItem]) -> list[list[OpenItem]]:
    """Greedy first-fit in arrival order within max_files and max_batch_bytes.

    Only batches that still have room are scanned, so packing stays linear when files are
    taken one per provider job (the common case) or batches fill up by count.
    """
    batches: list[list[OpenItem]] = []
    open_: list[tuple[list[OpenItem], list[int]]] = []  # batches with room, and their byte totals
    for item in items:
        size = item.size or 0
        for idx, (batch, total) in enumerate(open_):
            if limits.max_batch_bytes is None or total[0] + size <= limits.max_batch_bytes:
                batch.append(item)
                total[0] += size
                if limits.max_files is not None and len(batch) >= limits.max_files:
                    del open_[idx]
                break
        else:
            batch = [item]
            batches.append(batch)
            if limits.max_files is None or limits.max_files > 1:
                open_.append((batch, [size]))
    return batches


def freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted((k, freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def created_at(item: OpenItem) -> float:
    return datetime.fromisoformat(item.created_at.replace("Z", "+00:00")).timestamp()


ARRIVAL_WINDOW_SECONDS = 10.0


def start_order(items: Sequence[OpenItem]) -> list[OpenItem]:
    """The order to start one-file provider jobs in: older arrivals first; among files that
    arrived together (within ARRIVAL_WINDOW_SECONDS), the biggest first, so a long recording
    does not start last and leave the other workers idle at the end (measured: a 72 s file
    dropped with two 30 s ones started last, and one of two cores sat idle for its tail)."""
    return sorted(items, key=lambda i: (int(created_at(i) // ARRIVAL_WINDOW_SECONDS), -(i.size or 0)))
