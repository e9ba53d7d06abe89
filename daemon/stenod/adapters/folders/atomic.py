"""Writing a file so that nobody ever sees half of it (temporary file, fsync, rename, fsync
the folder), and removing the temporary files of writers that were killed before their
rename. Also the key stenod records its files under (:func:`output_key`)."""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path

from stenod.journal import OutputFile

_MAX_NAME = 255


def output_key(path: Path) -> str:
    """The path with its folder's symlinks resolved: one spelling for one file, whichever
    way a rule or a request named its folder (the journal records stenod's files under it)."""
    return os.path.join(os.path.realpath(path.parent), path.name)


def unchecked() -> None:
    """Writes that no lease governs."""


def atomic_write(
    path: Path, data: bytes, *, sync_dir: bool = True, check: Callable[[], None] = unchecked
) -> OutputFile:
    """Write ``data`` to ``path`` so a reader sees the old file or the whole new one, never
    a torn one, and never through a symlink planted at the temp or final name. With
    ``sync_dir=False`` the caller fsyncs the folder once after several files. ``check``
    runs just before the rename (a lease that may have run out raises there); whatever
    stops the write before the rename removes the temp file. Returns the file with the
    size and mtime it has after the rename (a rename keeps both)."""
    directory = path.parent
    if len(path.name.encode()) > _MAX_NAME:
        raise OSError(36, "file name too long", str(path))
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        # Unique per writer: two threads may write the same output name at once.
        tmp = f".{path.name[:200]}.{os.getpid()}.{threading.get_ident()}.{secrets.token_hex(4)}.stenod-tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dir_fd)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
                st = os.fstat(fd)
            finally:
                os.close(fd)
            check()
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise
        os.replace(tmp, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        if sync_dir:
            os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return OutputFile(str(path), output_key(path), st.st_size, st.st_mtime_ns)


def sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class OrphanSweeper:
    """Removes temp files whose writer process is gone: a kill -9 between creating a temp file
    and renaming it leaves one behind (``.<name>.<pid>.<thread>.<token>.stenod-tmp``).

    Listing a folder costs as much as the folder is big, so each folder is swept on the first
    write to it and then at most every ``every_seconds`` (a killed one-shot ``stenod
    transcribe`` may leave one later), not on every write: in a folder of thousands of
    recordings that turned each write into a scan of the folder. Thread-safe."""

    def __init__(self, every_seconds: float = 600.0, max_folders: int = 10_000) -> None:
        self._every = every_seconds
        self._max = max_folders
        self._swept: dict[Path, float] = {}
        self._lock = threading.Lock()

    def visit(self, directory: Path) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._swept.get(directory)
            if last is not None and now - last < self._every:
                return
            if len(self._swept) >= self._max:
                self._swept.clear()
            self._swept[directory] = now
        remove_orphaned_temps(directory)


def remove_orphaned_temps(directory: Path) -> None:
    """Remove the temp files in ``directory`` whose writer process is not running."""
    try:
        names = [n for n in os.listdir(directory) if n.endswith(".stenod-tmp")]
    except OSError:
        return
    for name in names:
        try:
            pid = int(name.rsplit(".", 4)[1])
        except (IndexError, ValueError):
            continue
        if not _alive(pid):
            with contextlib.suppress(OSError):
                os.unlink(directory / name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
