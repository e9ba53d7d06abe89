"""Uploads, streamed from the socket straight into spool files under the state directory.

A multipart body is parsed as it arrives (python-multipart's streaming parser): file parts
go to disk in ~1 MB writes made off the event loop, hashed on the way for deduplication,
small text fields are kept in memory. Nothing is held whole in memory, and a body larger
than ``max_bytes`` is refused (413) as soon as that is known: at once when its
``Content-Length`` says so, else when the count passes the limit. Raw PCM (``/asr`` with
``encode=false``, as Bazarr sends it) is wrapped in a WAV header as it is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import structlog
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request
from ulid import ULID

from stenod.adapters.folders.writers import safe_stem
from stenod.errors import StenodError

__all__ = ["BadUpload", "Spool", "SpooledFile", "SpooledForm", "UploadTooLarge"]

log = structlog.get_logger("stenod.http")

_FLUSH_BYTES = 1 << 20
_MAX_FIELD_BYTES = 64 * 1024
# A known speaker's reference clip comes as a data URL in a text field (OpenAI's form): up
# to 4 of them, each 2-10 s of audio (a 10 s 48 kHz stereo WAV is 2.5 MB in base64).
_LONG_FIELDS = {"known_speaker_references[]": 4 * 1024 * 1024, "known_speaker_references": 4 * 1024 * 1024}
_MAX_PARTS = 100
_PCM_RATE = 16_000  # what whisper-asr-webservice's encode=false means: 16 kHz mono s16le, no header


class UploadTooLarge(StenodError):
    """The body is over ``max_bytes``."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the upload is larger than the limit of {limit:,} bytes ([http] max_upload_bytes)")
        self.limit = limit


class BadUpload(StenodError):
    """The body is not a usable multipart form; ``param`` names the field at fault."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(slots=True)
class SpooledFile:
    """One file part, complete on disk."""

    field: str
    name: str  # the client's file name, made safe
    path: Path
    original: str = ""  # the name exactly as the client sent it (for answers that echo it)
    size: int = 0
    sha256: str = ""
    device: int = 0
    inode: int = 0


@dataclass(slots=True)
class SpooledForm:
    """A parsed multipart body: text fields (each may repeat) and the files, in its spool folder."""

    folder: Path
    fields: dict[str, list[str]] = field(default_factory=dict)
    files: list[SpooledFile] = field(default_factory=list)

    def value(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[-1] if values else None


def safe_name(filename: str | None, default: str = "upload") -> str:
    """A client's file name as one safe path component, its extension kept."""
    stem = safe_stem(filename or default)
    suffix = Path(filename or "").suffix.lower().lstrip(".")
    ext = "".join(ch for ch in suffix if ch.isascii() and ch.isalnum())[:10]
    return f"{stem}.{ext}" if ext else stem


def _wav_header(data_bytes: int) -> bytes:
    return (
        b"RIFF"
        + struct.pack("<I", min(0xFFFFFFFF, 36 + data_bytes))
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, _PCM_RATE, _PCM_RATE * 2, 2, 16)
        + b"data"
        + struct.pack("<I", min(0xFFFFFFFF, data_bytes))
    )


class _PartWriter:
    """One file part on its way to disk: buffered, hashed, written in a thread."""

    def __init__(self, spooled: SpooledFile, *, raw_pcm: bool) -> None:
        self.spooled = spooled
        self.raw_pcm = raw_pcm
        self.buffer = bytearray(_wav_header(0) if raw_pcm else b"")
        self._hash = hashlib.sha256()
        self._file: IO[bytes] | None = None

    def _write(self, data: bytes) -> None:
        if self._file is None:
            self._file = open(self.spooled.path, "xb")  # noqa: SIM115 (closed in _finish)
        self._file.write(data)
        self._hash.update(data)

    async def flush(self) -> None:
        data, self.buffer = bytes(self.buffer), bytearray()
        if data or self._file is None:
            await asyncio.to_thread(self._write, data)

    def _finish(self) -> None:
        assert self._file is not None
        if self.raw_pcm:  # the sizes in the header were unknown until now (the hash keeps the
            size = self._file.tell()  # placeholder's: the same samples still hash the same)
            self._file.seek(0)
            self._file.write(_wav_header(size - 44))
        self._file.flush()
        os.fsync(self._file.fileno())
        st = os.fstat(self._file.fileno())
        self._file.close()
        self.spooled.size, self.spooled.device, self.spooled.inode = st.st_size, st.st_dev, st.st_ino
        self.spooled.sha256 = self._hash.hexdigest()

    async def finish(self) -> None:
        await self.flush()
        await asyncio.to_thread(self._finish)

    def close(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()


class Spool:
    """Receives uploads into ``root/<id>/`` folders; :meth:`discard` removes one."""

    def __init__(self, root: Path, *, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes

    async def receive(self, request: Request, *, file_fields: frozenset[str], raw_pcm: bool = False) -> SpooledForm:
        """Parse a multipart body, writing its files to a new spool folder.

        Raises UploadTooLarge, BadUpload, or ClientDisconnect (the folder is removed then).
        """
        kind, params = parse_options_header(request.headers.get("content-type"))
        if kind != b"multipart/form-data" or b"boundary" not in params:
            raise BadUpload("the body must be multipart/form-data (a form with a file)")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            raise UploadTooLarge(self.max_bytes)
        folder = self.root / str(ULID())
        await asyncio.to_thread(folder.mkdir, parents=True)
        form = SpooledForm(folder)
        try:
            await self._parse(request, params[b"boundary"], form, file_fields, raw_pcm)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, folder, True)
            raise
        return form

    async def _parse(
        self,
        request: Request,
        boundary: bytes,
        form: SpooledForm,
        file_fields: frozenset[str],
        raw_pcm: bool,
    ) -> None:
        state = _ParseState(form, file_fields, raw_pcm)
        parser = MultipartParser(boundary, state.callbacks())  # type: ignore[arg-type]
        total = 0
        try:
            async for chunk in request.stream():
                total += len(chunk)
                if total > self.max_bytes:
                    raise UploadTooLarge(self.max_bytes)
                parser.write(chunk)
                state.check()
                for writer in state.writers:
                    if len(writer.buffer) >= _FLUSH_BYTES:
                        await writer.flush()
            parser.finalize()
            state.check()
            if not state.ended:
                raise BadUpload("the multipart body ends before its closing boundary")
            for writer in state.writers:
                await writer.finish()
        except MultipartParseError as error:
            # A body that breaks the multipart syntax (a boundary not followed by CRLF, a
            # header line without a colon) is the client's error, not a server error.
            raise BadUpload(f"the multipart body is malformed: {error}") from None
        finally:
            for writer in state.writers:
                writer.close()

    async def discard(self, folder: Path) -> None:
        """Remove one upload's folder (a rejected or repeated request, or a finished job)."""
        await asyncio.to_thread(shutil.rmtree, folder, True)

    async def sweep(self, live: Callable[[str], Awaitable[set[str]]] | None = None) -> None:
        """Remove spool folders no unfinished job needs (left by a crash between upload and
        commit, or by a job cancelled before it wrote anything)."""
        if live is None or not self.root.is_dir():
            return
        needed = {Path(p).parent for p in await live(str(self.root) + os.sep)}
        for folder in await asyncio.to_thread(lambda: [p for p in self.root.iterdir() if p.is_dir()]):
            if folder not in needed:
                log.info("spool.swept", folder=str(folder))
                await self.discard(folder)


class _ParseState:
    """The callbacks' side of parsing: which part we are in and where its bytes go."""

    def __init__(self, form: SpooledForm, file_fields: frozenset[str], raw_pcm: bool) -> None:
        self.form = form
        self.file_fields = file_fields
        self.raw_pcm = raw_pcm
        self.writers: list[_PartWriter] = []
        self.ended = False
        self.error: BadUpload | None = None
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._text: bytearray | None = None
        self._name = ""
        self._writer: _PartWriter | None = None
        self._parts = 0

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda data, start, end: self._header_field.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._header_value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def _part_begin(self) -> None:
        self._headers = {}
        self._parts += 1
        if self._parts > _MAX_PARTS:
            self.error = self.error or BadUpload(f"the form has more than {_MAX_PARTS} parts")

    def _header_end(self) -> None:
        self._headers[bytes(self._header_field).lower()] = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = params.get(b"name", b"").decode("utf-8", "replace")
        filename = params.get(b"filename")
        if self._name in self.file_fields and filename is not None:
            name = safe_name(filename.decode("utf-8", "replace"))
            if self.raw_pcm:
                name = f"{safe_stem(name)}.wav"
            path = self.form.folder / f"{len(self.writers)}-{name}"
            spooled = SpooledFile(self._name, name, path, original=filename.decode("utf-8", "replace"))
            self._writer = _PartWriter(spooled, raw_pcm=self.raw_pcm)
            self.writers.append(self._writer)
            self.form.files.append(spooled)
        else:
            self._writer = None
            self._text = bytearray()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._writer is not None:
            self._writer.buffer.extend(data[start:end])
        elif self._text is not None:
            self._text.extend(data[start:end])
            if len(self._text) > _LONG_FIELDS.get(self._name, _MAX_FIELD_BYTES):
                self.error = self.error or BadUpload(f"the form field {self._name!r} is too long", self._name)
                self._text = None

    def _part_end(self) -> None:
        if self._writer is None and self._text is not None:
            with contextlib.suppress(UnicodeDecodeError):
                self.form.fields.setdefault(self._name, []).append(self._text.decode("utf-8"))
                return
            self.error = self.error or BadUpload(f"the form field {self._name!r} is not UTF-8 text", self._name)
        self._writer = None
        self._text = None

    def _end(self) -> None:
        self.ended = True
