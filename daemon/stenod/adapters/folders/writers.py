"""Result files: ``.txt``, ``.json``, ``.srt``, ``.vtt``, translated documents and
``.error.json``, each written atomically (:mod:`~stenod.adapters.folders.atomic`), and
named before they are written (``FileSink.planned``) so the journal knows them as stenod's.

Also applies a watch rule's ``after`` action (keep, move to done/ or failed/, delete).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import stat
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import structlog

from stenod.adapters.folders.atomic import OrphanSweeper, atomic_write, output_key, sync_directory, unchecked
from stenod.errors import ErrorInfo
from stenod.formats import render_json, render_srt, render_txt, render_vtt
from stenod.journal import OpenItem, OutputFile, Unsettled
from stenod.jsontext import dumps_pretty
from stenod.output_spec import TRANSCRIPT_FORMATS
from stenod.provider import ItemResult, Transcript

log = structlog.get_logger("stenod.output")

ERROR_SUFFIX = ".error.json"
# Some filesystems keep modification times to the second or two (FAT, some network shares).
_MTIME_GRAIN_SECONDS = 2.0


def safe_stem(name: str) -> str:
    """A file-name stem that cannot leave its folder (names from requests or providers)."""
    base = unicodedata.normalize("NFC", name.replace("\\", "/").rsplit("/", 1)[-1])
    base = "".join(ch for ch in base if ch.isprintable() and ch not in "\x00/")
    stem = base.rsplit(".", 1)[0] if "." in base.strip(".") else base
    stem = stem.strip().lstrip(".")
    if stem in ("", ".", ".."):
        stem = "input"
    return stem.encode("utf-8")[:200].decode("utf-8", "ignore")


class FileSink:
    """The OutputSink the dispatcher writes through. Runs in worker threads."""

    def __init__(self, fallback_dir: Path) -> None:
        self._fallback_dir = fallback_dir  # for inputs with no folder of their own (URL downloads)
        self._sweeper = OrphanSweeper()

    def _target(self, item: OpenItem, *, failed: bool = False) -> Path:
        output = item.output
        if output.dir:
            directory = Path(output.dir)
        elif output.after == "move" and output.root:
            return _own_folder(Path(output.root) / ("failed" if failed else "done"))
        elif item.path and not item.input.startswith(("http://", "https://")):
            directory = Path(item.path).parent
        else:
            return _own_folder(self._fallback_dir / item.job_id, parents=True)
        directory.mkdir(parents=True, exist_ok=True)
        if output.resolved and os.path.realpath(directory) != str(directory):
            # The folder was checked (symlinks resolved) when the request was accepted.
            raise OSError(
                errno.ELOOP,
                f"{directory} was replaced by a symlink after the request was accepted; "
                "stenod does not write through it",
            )
        return directory

    def planned(self, item: OpenItem, result: ItemResult | None) -> list[str]:
        """The keys (``output_key``) of every file that writing ``result`` for ``item`` may
        write, its error file included (a write that fails ends in one); ``result`` None:
        the error file alone. Recorded in the journal before the write."""
        paths: list[Path] = []
        if result is not None and (result.transcript is not None or result.documents):
            with contextlib.suppress(OSError):  # the write will fail the same way, into an error file
                paths += [path for path, _ in self._result_files(item, result)]
        with contextlib.suppress(OSError):
            paths.append(self._error_path(item))
        return [output_key(p) for p in paths]

    def planned_rewrite(self, outputs: Sequence[str], *, name: str) -> list[str]:
        """The keys of the files ``rewrite`` writes."""
        return [output_key(path) for path in self._rewritable(outputs, name)]

    def rewrite(self, outputs: Sequence[str], transcript: Transcript, *, name: str, source: str) -> list[OutputFile]:
        """A corrected transcript over the transcript files written for input ``name`` (not
        its error file, not translated documents), each replaced atomically."""
        renderers = self._renderers(source)
        return [
            atomic_write(path, renderers[path.suffix.lstrip(".")](transcript))
            for path in self._rewritable(outputs, name)
        ]

    @staticmethod
    def _rewritable(outputs: Sequence[str], name: str) -> list[Path]:
        stem = safe_stem(name)
        paths = [Path(output) for output in outputs]
        return [
            path
            for path in paths
            if path.suffix.lstrip(".") in TRANSCRIPT_FORMATS
            and path.name == f"{stem}{path.suffix}"
            and path.parent.is_dir()
        ]

    @staticmethod
    def _renderers(source: str) -> dict[str, Callable[[Transcript], bytes]]:
        return {
            "txt": render_txt,
            "json": lambda t: render_json(t, source=source),
            "srt": render_srt,
            "vtt": render_vtt,
        }

    def _result_files(self, item: OpenItem, result: ItemResult) -> list[tuple[Path, Callable[[], bytes]]]:
        """Where each of a result's files goes, and how to make its content."""
        directory = self._target(item)
        stem = safe_stem(item.name)
        files: list[tuple[Path, Callable[[], bytes]]] = []
        transcript = result.transcript
        if transcript is not None:
            renderers = self._renderers(item.input)
            for fmt in item.output.formats:
                files.append((directory / f"{stem}.{fmt}", functools.partial(renderers[fmt], transcript)))
        for doc in result.documents:
            lang = "".join(ch for ch in doc.language if ch.isalnum() or ch == "-")[:35] or "xx"
            ext = doc.extension.lstrip(".").lower()
            if not ext.isalnum():
                ext = "bin"
            files.append((directory / f"{stem}.{lang}.{ext}", functools.partial(bytes, doc.content)))
        return files

    def _error_path(self, item: OpenItem) -> Path:
        return self._target(item, failed=True) / f"{safe_stem(item.name)}{ERROR_SUFFIX}"

    def write_result(
        self, item: OpenItem, result: ItemResult, *, sync_folder: bool = True, check: Callable[[], None] = unchecked
    ) -> list[OutputFile]:
        """Write the transcript formats and translated documents; with ``sync_folder=False``
        the caller fsyncs the folder (``sync_folders``) once for several items. ``check``
        runs before each change to the folder (each rename, the error file's removal, the
        input's move) and stops the writes where it raises."""
        check()
        files = self._result_files(item, result)
        written = [atomic_write(path, content(), sync_dir=False, check=check) for path, content in files]
        directory = self._target(item)
        check()
        self._clear_error(directory, safe_stem(item.name))
        self._sweeper.visit(directory)
        if sync_folder:
            sync_directory(directory)  # once for all the renames above
        check()
        self._after(item, succeeded=True)
        return written

    def write_error(
        self, item: OpenItem, error: ErrorInfo, *, check: Callable[[], None] = unchecked
    ) -> list[OutputFile]:
        """Write the item's ``.error.json``; ``check`` as for :meth:`write_result`."""
        check()
        path = self._error_path(item)
        body = {
            "input": item.input,
            "job_id": item.job_id,
            "provider": item.provider,
            "error": error.to_json(),
            "what_to_do": error.what_to_do,
        }
        written = atomic_write(path, dumps_pretty(body) + b"\n", check=check)
        self._sweeper.visit(path.parent)
        check()
        self._after(item, succeeded=False)
        return [written]

    @staticmethod
    def remove_unsettled(
        unsettled: Sequence[Unsettled], written: Sequence[OutputFile], *, check: Callable[[], None] = unchecked
    ) -> list[str]:
        """Remove the files an earlier attempt at the item wrote and never recorded (it was
        killed between the two) that this attempt did not write again: a failure must not
        leave the output set of an attempt the journal never took beside its error file.
        A file older than its announcement is not one stenod wrote (a user's file of that
        name the earlier attempt never reached): it stays. Returns the paths removed."""
        keep = {f.key for f in written}
        removed: list[str] = []
        for entry in unsettled:
            if entry.key in keep:
                continue
            path = Path(entry.key)
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(st.st_mode) or st.st_mtime + _MTIME_GRAIN_SECONDS < entry.since:
                continue
            check()
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("output.unsettled_not_removed", path=entry.key, error=str(exc))
                continue
            removed.append(entry.key)
        if removed:
            log.info("output.unsettled_removed", paths=removed)
        return removed

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
        if item.output.then_translate_to and item.task == "translate":
            return  # a chained step's input is our own transcript, not the user's file
        action = item.output.after
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
        root = Path(item.output.root or source.parent)
        destination = _own_folder(root / ("done" if succeeded else "failed"))
        shutil.move(source, destination / source.name)
        log.info("input.moved", input=str(source), to=str(destination))

    @staticmethod
    def _drop_download(path: Path) -> None:
        """A URL input's download or an HTTP upload is our copy: remove it (and its folder) once done,
        with the reference clips of known speakers an upload brought (``known/``)."""
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        shutil.rmtree(path.parent / "known", ignore_errors=True)
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # only if empty: other items of the job may still need theirs


def _own_folder(directory: Path, *, parents: bool = False) -> Path:
    """``directory``, created if missing, if it is a real folder: never a symlink planted in a
    watched folder (a ``done`` linked elsewhere), so no output or moved input leaves it."""
    directory.mkdir(parents=parents, exist_ok=True)
    if directory.is_symlink() or not directory.is_dir():
        raise OSError(errno.ELOOP, f"{directory} is a symlink or not a folder; stenod does not write through it")
    return directory
