"""What a watched folder's files are to stenod before they become work: names it never
takes (dot-files, partial downloads, its own outputs by name), and a file opened only if it
is a regular file with one name, read through the descriptor that was checked."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from stenod.adapters.folders.writers import ERROR_SUFFIX
from stenod.errors import StenodError
from stenod.output_spec import TRANSCRIPT_FORMATS
from stenod.settings import WatchRule

PARTIAL_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".download", ".!qb", "~")
_HASH_CHUNK = 1 << 20


class FileRefused(StenodError):
    """A path that must not be read (symlink, hard link, FIFO, device, changed under us)."""


def is_ignored_name(rule: WatchRule, path: Path) -> str | None:
    """Why a name is never a job for this rule (None: it may be)."""
    name = path.name
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8 (rename the file)"
    if name.startswith("."):
        return "dot-file"
    lower = name.lower()
    if lower.endswith(PARTIAL_SUFFIXES):
        return "partial download"
    if lower.endswith(ERROR_SUFFIX) or lower.endswith(".stenod-tmp"):
        return "stenod output"
    stem, _, ext = lower.rpartition(".")
    if rule.task == "transcribe" and ext in TRANSCRIPT_FORMATS:
        return "stenod output"
    languages = {lang.lower() for lang in (*rule.target_languages, *rule.chain_languages)}
    if languages and "." in stem and stem.rpartition(".")[2] in languages:
        return "stenod output"  # name.<lang>.<ext>: a translation stenod wrote
    return None


def open_regular(path: Path) -> tuple[int, os.stat_result]:
    """Open a regular, singly-linked file without following symlinks; return fd and its stat."""
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        raise FileRefused("symlink")
    if not stat.S_ISREG(st.st_mode):
        raise FileRefused("not a regular file (FIFO, socket, device or directory)")
    if st.st_nlink != 1:
        raise FileRefused("hard link (more than one name for the same file)")
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    fst = os.fstat(fd)
    if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        raise FileRefused("file was replaced while being opened")
    return fd, fst


def hash_file(path: Path) -> tuple[str, os.stat_result]:
    """SHA-256 of the content, read through a verified descriptor (runs in a thread)."""
    fd, st = open_regular(path)
    digest = hashlib.sha256()
    try:
        os.set_blocking(fd, True)
        while chunk := os.read(fd, _HASH_CHUNK):
            digest.update(chunk)
    finally:
        os.close(fd)
    return digest.hexdigest(), st
