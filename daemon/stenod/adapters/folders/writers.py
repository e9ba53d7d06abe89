"""Result files: ``.txt``, ``.json``, ``.srt``, ``.vtt``, translated documents and
``.error.json``, each written atomically (temp file, fsync, rename, fsync the folder).

Also applies a watch rule's ``after`` action (keep, move to done/ or failed/, delete).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog

from stenod.errors import ErrorInfo
from stenod.formats import render_json, render_srt, render_txt, render_vtt
from stenod.journal import OpenItem
from stenod.jsontext import dumps_pretty
from stenod.provider import ItemResult, Transcript

log = structlog.get_logger("stenod.output")

TRANSCRIPT_FORMATS = ("txt", "json", "srt", "vtt")
ERROR_SUFFIX = ".error.json"
_MAX_NAME = 255


def safe_stem(name: str) -> str:
    """A file-name stem that cannot leave its folder (names from requests or providers)."""
    base = unicodedata.normalize("NFC", name.replace("\\", "/").rsplit("/", 1)[-1])
    base = "".join(ch for ch in base if ch.isprintable() and ch not in "\x00/")
    stem = base.rsplit(".", 1)[0] if "." in base.strip(".") else base
    stem = stem.strip().lstrip(".")
    if stem in ("", ".", ".."):
        stem = "input"
    return stem.encode("utf-8")[:200].decode("utf-8", "ignore")


def _unchecked() -> None:
    """Writes that no lease governs."""


def atomic_write(path: Path, data: bytes, *, sync_dir: bool = True, check: Callable[[], None] = _unchecked) -> None:
    """Write ``data`` to ``path`` so a reader sees the old file or the whole new one, never
    a torn one, and never through a symlink planted at the temp or final name. With
    ``sync_dir=False`` the caller fsyncs the folder once after several files. ``check``
    runs just before the rename (a lease that may have run out raises there); whatever
    stops the write before the rename removes the temp file."""
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


def sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileSink:
    """The OutputSink the dispatcher writes through. Runs in worker threads."""

    def __init__(self, fallback_dir: Path) -> None:
        self._fallback_dir = fallback_dir  # for inputs with no folder of their own (URL downloads)
        self._sweeper = OrphanSweeper()

    def _target(self, item: OpenItem, *, failed: bool = False) -> Path:
        output: Mapping[str, Any] = item.output
        if output.get("dir"):
            directory = Path(output["dir"])
        elif output.get("after") == "move" and output.get("root"):
            return _own_folder(Path(output["root"]) / ("failed" if failed else "done"))
        elif item.path and not item.input.startswith(("http://", "https://")):
            directory = Path(item.path).parent
        else:
            return _own_folder(self._fallback_dir / item.job_id, parents=True)
        directory.mkdir(parents=True, exist_ok=True)
        if output.get("resolved") and os.path.realpath(directory) != str(directory):
            # The folder was checked (symlinks resolved) when the request was accepted.
            raise OSError(
                errno.ELOOP,
                f"{directory} was replaced by a symlink after the request was accepted; "
                "stenod does not write through it",
            )
        return directory

    def rewrite(self, outputs: Sequence[str], transcript: Transcript, *, name: str, source: str) -> list[str]:
        """A corrected transcript over the transcript files written for input ``name`` (not
        its error file, not translated documents), each replaced atomically."""
        stem = safe_stem(name)
        renderers = self._renderers(source)
        written = []
        for output in outputs:
            path = Path(output)
            render = renderers.get(path.suffix.lstrip("."))
            if render is None or path.name != f"{stem}{path.suffix}" or not path.parent.is_dir():
                continue
            atomic_write(path, render(transcript))
            written.append(output)
        return written

    @staticmethod
    def _renderers(source: str) -> dict[str, Callable[[Transcript], bytes]]:
        return {
            "txt": render_txt,
            "json": lambda t: render_json(t, source=source),
            "srt": render_srt,
            "vtt": render_vtt,
        }

    def write_result(
        self, item: OpenItem, result: ItemResult, *, sync_folder: bool = True, check: Callable[[], None] = _unchecked
    ) -> list[str]:
        """Write the transcript formats and translated documents; with ``sync_folder=False``
        the caller fsyncs the folder (``sync_folders``) once for several items. ``check``
        runs before each change to the folder (each rename, the error file's removal, the
        input's move) and stops the writes where it raises."""
        check()
        directory = self._target(item)
        stem = safe_stem(item.name)
        written: list[str] = []
        if result.transcript is not None:
            formats = item.output.get("formats") or TRANSCRIPT_FORMATS
            renderers = self._renderers(item.input)
            for fmt in formats:
                path = directory / f"{stem}.{fmt}"
                atomic_write(path, renderers[fmt](result.transcript), sync_dir=False, check=check)
                written.append(str(path))
        for doc in result.documents:
            lang = "".join(ch for ch in doc.language if ch.isalnum() or ch == "-")[:35] or "xx"
            ext = doc.extension.lstrip(".").lower()
            if not ext.isalnum():
                ext = "bin"
            path = directory / f"{stem}.{lang}.{ext}"
            atomic_write(path, doc.content, sync_dir=False, check=check)
            written.append(str(path))
        check()
        self._clear_error(directory, stem)
        self._sweeper.visit(directory)
        if sync_folder:
            sync_directory(directory)  # once for all the renames above
        check()
        self._after(item, succeeded=True)
        return written

    def write_error(self, item: OpenItem, error: ErrorInfo, *, check: Callable[[], None] = _unchecked) -> list[str]:
        """Write the item's ``.error.json``; ``check`` as for :meth:`write_result`."""
        check()
        directory = self._target(item, failed=True)
        stem = safe_stem(item.name)
        path = directory / f"{stem}{ERROR_SUFFIX}"
        body = {
            "input": item.input,
            "job_id": item.job_id,
            "provider": item.provider,
            "error": error.to_json(),
            "what_to_do": error.what_to_do,
        }
        atomic_write(path, dumps_pretty(body) + b"\n", check=check)
        self._sweeper.visit(directory)
        check()
        self._after(item, succeeded=False)
        return [str(path)]

    @staticmethod
    def sync_folders(folders: Iterable[Path]) -> None:
        """Make the renames in these folders durable (a folder removed since has nothing to keep)."""
        for folder in folders:
            with contextlib.suppress(FileNotFoundError):
                sync_directory(folder)

    @staticmethod
    def _clear_error(directory: Path, stem: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (directory / f"{stem}{ERROR_SUFFIX}").unlink()

    def _after(self, item: OpenItem, *, succeeded: bool) -> None:
        if item.output.get("then_translate_to") and item.task == "translate":
            return  # a chained step's input is our own transcript, not the user's file
        action = item.output.get("after", "keep")
        if item.path and (item.input.startswith(("http://", "https://")) or action == "discard"):
            self._drop_download(Path(item.path))  # a download or an upload: our copy, done with
            return
        if action == "keep" or not item.path:
            return
        source = Path(item.path)
        try:
            st = source.lstat()
        except FileNotFoundError:
            return  # already moved or deleted (a restart after the action)
        if item.inode is not None and st.st_ino != item.inode:
            return  # a different file now has this name: not ours to touch
        if action == "delete":
            if succeeded:
                source.unlink()
                log.info("input.deleted", input=str(source))
            return
        root = Path(item.output.get("root") or source.parent)
        destination = _own_folder(root / ("done" if succeeded else "failed"))
        shutil.move(source, destination / source.name)
        log.info("input.moved", input=str(source), to=str(destination))

    @staticmethod
    def _drop_download(path: Path) -> None:
        """A URL input's download or an HTTP upload is our copy: remove it (and its folder) once done."""
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # only if empty: other items of the job may still need theirs


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


def _own_folder(directory: Path, *, parents: bool = False) -> Path:
    """``directory``, created if missing, if it is a real folder: never a symlink planted in a
    watched folder (a ``done`` linked elsewhere), so no output or moved input leaves it."""
    directory.mkdir(parents=parents, exist_ok=True)
    if directory.is_symlink() or not directory.is_dir():
        raise OSError(errno.ELOOP, f"{directory} is a symlink or not a folder; stenod does not write through it")
    return directory
