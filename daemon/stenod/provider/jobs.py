"""A provider job as a provider sees it: what it is asked (``Batch`` of ``BatchItem``s, for a
``Task``), the ``Handle`` it returns, and the ``Status`` it answers a poll with. Part of the
plugin API: plugins import these names from :mod:`stenod.provider`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, TypeAlias

from pydantic import BaseModel

from stenod.errors import ErrorInfo, PermanentError
from stenod.speakers import Diarization

__all__ = [
    "Batch",
    "BatchItem",
    "Handle",
    "ItemStatus",
    "Json",
    "RemoteState",
    "Status",
    "Task",
    "audio_too_long",
    "finished",
    "is_finished",
]

Json: TypeAlias = Any
"""A JSON-serialisable value (dict/list/str/int/float/bool/None)."""

Handle: TypeAlias = Mapping[str, Json]
"""What ``submit`` returns: everything needed to poll, fetch and cancel the provider
job later, persisted in the journal. Must be JSON-serialisable and must not contain
secrets or presigned URLs (they are short-lived and are credentials)."""

_FINISHED_KEY = "stenod:finished"


def finished(handle: Mapping[str, Json]) -> dict[str, Json]:
    """Mark a handle whose work is already done (a synchronous backend answered with the
    result): the dispatcher then polls at once instead of waiting the poll interval."""
    return {**handle, _FINISHED_KEY: True}


def is_finished(handle: Mapping[str, Json]) -> bool:
    return bool(handle.get(_FINISHED_KEY))


class Task(StrEnum):
    """What a job asks for."""

    TRANSCRIBE = "transcribe"
    TRANSLATE = "translate"


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One input file of a provider job.

    ``name`` is a safe base name (no directory part) to use for uploads. Read the
    content only through :meth:`open`, which refuses the file if it was replaced
    (symlink, different inode, changed size) since stenod accepted it; upload it as
    ``FileUpload(item.name, item.size, item.open)`` (see :class:`MultipartBody` and
    :func:`file_chunks`), which calls ``open`` and reads in a worker thread.
    """

    item_id: str
    path: Path
    name: str
    size: int
    duration: float | None = None
    device: int | None = None
    inode: int | None = None

    @property
    def extension(self) -> str:
        return self.path.suffix.lower().lstrip(".")

    def open(self) -> IO[bytes]:
        """Open the input for reading, without following symlinks.

        Raises PermanentError if the file is gone or is no longer the file that was
        accepted.
        """
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise PermanentError(
                f"input file {self.path} disappeared before it could be read", code="input_missing"
            ) from exc
        except OSError as exc:
            raise PermanentError(f"cannot open {self.path}: {exc.strerror}", code="input_unreadable") from exc
        st = os.fstat(fd)
        same = (self.inode is None or (st.st_ino == self.inode and st.st_dev == self.device)) and (
            st.st_size == self.size
        )
        if not same:
            os.close(fd)
            raise PermanentError(f"input file {self.path} changed after it was accepted", code="input_changed")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")


@dataclass(frozen=True, slots=True)
class Batch:
    """One provider job: items of the same task, language and options.

    ``batch_id`` is stable across restarts: use it as an idempotency key or request
    id where the provider has one. ``options`` is an instance of the provider's
    ``Options`` model. ``diarization``: the job asks who spoke (only given to a provider
    whose ``Limits.diarization`` is true); segments and words then carry ``speaker``, and
    the transcript lists its ``speakers``.
    """

    batch_id: str
    task: Task
    items: tuple[BatchItem, ...]
    language: str | None
    target_languages: tuple[str, ...]
    options: BaseModel
    diarization: Diarization | None = None


class RemoteState(StrEnum):
    """A provider job's state as the dispatcher needs it."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"  # finished; fetch() gives per-item results (some may have failed)
    FAILED = "failed"  # the whole provider job failed; Status.error says why
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class ItemStatus:
    item_id: str
    state: RemoteState
    error: ErrorInfo | None = None


@dataclass(frozen=True, slots=True)
class Status:
    """The answer to ``poll``. ``retry_after`` asks for the next poll no sooner than
    that many seconds from now (the core also applies the minimum poll interval)."""

    state: RemoteState
    progress: float | None = None
    items: tuple[ItemStatus, ...] = ()
    retry_after: float | None = None
    error: ErrorInfo | None = None


def audio_too_long(provider: str, label: str, seconds: float, max_seconds: float, *, declared: bool) -> PermanentError:
    """The error for a file longer than ``[providers.<provider>] max_audio_seconds``:
    ``declared`` when its header says so (refused before decoding), else when decoding
    passed the limit (a header that lied or said nothing)."""
    said = "its header says it lasts" if declared else "it holds more than"
    return PermanentError(
        f"{label} is too long: {said} {seconds / 3600:.1f} h ({seconds:.0f} s); {provider} takes at most "
        f"{max_seconds:.0f} s per file",
        code="too_long",
        hint=f"Split the recording into shorter parts, or raise [providers.{provider}] max_audio_seconds.",
    )
