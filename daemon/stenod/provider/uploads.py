"""Request bodies that upload local files without reading them on the event loop.

httpx's ``files=`` encoder and a file object handed to ``content=`` read the file
synchronously on the event loop: on a slow disk or network mount a large upload stalls
every other job, the queue consumer and ``/healthz``. These bodies open and read each file
in a worker thread, 1 MiB at a time, and know their exact length before sending. Plugins
reach them through :mod:`stenod.provider`.
"""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
import re
import secrets
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import IO

from stenod.errors import PermanentError

_CHUNK = 1 << 20
# Field names and file names in Content-Disposition, escaped as the HTML5 form encoding
# (and httpx's own multipart encoder) does: providers' servers are tested against that.
_FORM_ESCAPES = {'"': "%22", "\\": "\\\\", **{chr(c): f"%{c:02X}" for c in range(0x20) if c != 0x1B}}
_FORM_ESCAPE = re.compile("|".join(re.escape(c) for c in _FORM_ESCAPES))


@dataclass(frozen=True, slots=True)
class FileUpload:
    """A local file to upload: ``open`` is called, and the file read, in a worker thread.

    ``size`` is what is sent (the ``Content-Length`` counts on it); a file found shorter or
    longer fails the upload. ``content_type`` None means guessed from ``filename``.
    """

    filename: str
    size: int
    open: Callable[[], IO[bytes]]
    content_type: str | None = None

    @property
    def media_type(self) -> str:
        """``content_type``, or the type ``filename`` suggests, or ``application/octet-stream``."""
        return self.content_type or mimetypes.guess_type(self.filename)[0] or "application/octet-stream"

    @property
    def headers(self) -> dict[str, str]:
        """``Content-Type`` and ``Content-Length`` of a request whose body is this file
        (``content=file_chunks(upload)``)."""
        return {"Content-Type": self.media_type, "Content-Length": str(self.size)}


async def file_chunks(upload: FileUpload, *, sent: Callable[[int], None] | None = None) -> AsyncGenerator[bytes, None]:
    """The file's ``upload.size`` bytes, for ``content=`` of a streamed request.

    ``sent`` is called with each chunk's length as it is handed on. Raises PermanentError
    (``input_changed``) if the file turns out shorter or longer, and whatever
    ``upload.open`` raises (a :class:`BatchItem`'s ``open`` raises PermanentError for a
    missing or replaced input).
    """
    source = await asyncio.to_thread(upload.open)
    with source:
        remaining = upload.size
        while True:
            want = min(_CHUNK, remaining)
            # The last read asks for one byte more: a file that grew is caught before its
            # last chunk leaves, so the server never takes a cut-off file as the whole one.
            chunk = await asyncio.to_thread(source.read, want + 1 if want == remaining else want)
            if len(chunk) > remaining:
                raise _changed(upload, "grew")
            if not chunk and remaining:
                raise _changed(upload, "shrank")
            remaining -= len(chunk)
            if chunk:
                if sent is not None:
                    sent(len(chunk))
                yield chunk
            if not remaining:
                return


def _changed(upload: FileUpload, how: str) -> PermanentError:
    return PermanentError(f"input file {upload.filename!r} {how} while it was being uploaded", code="input_changed")


class MultipartBody:
    """A ``multipart/form-data`` body: text fields, then file parts, framed with a random
    boundary, byte for byte as httpx's ``data=``/``files=`` would encode them.

    ``fields`` and ``files`` are ``(field name, value)`` pairs, in the order they are sent;
    ``length`` is the body's exact length in bytes::

        body = MultipartBody([("model", "whisper")], [("audio", FileUpload(name, size, item.open))])
        await http.post(url, content=body.stream(), headers={**auth, **body.headers})
    """

    def __init__(self, fields: Sequence[tuple[str, str]], files: Sequence[tuple[str, FileUpload]]) -> None:
        self.boundary = secrets.token_hex(16)
        self._fields = [self._head(name) + f"{value}\r\n".encode() for name, value in fields]
        self._files = [(self._head(name, upload), upload) for name, upload in files]
        self._end = f"--{self.boundary}--\r\n".encode()
        self.length = (
            sum(map(len, self._fields))
            + sum(len(head) + upload.size + 2 for head, upload in self._files)
            + len(self._end)
        )

    @property
    def content_type(self) -> str:
        """The request's ``Content-Type``, with the boundary."""
        return f"multipart/form-data; boundary={self.boundary}"

    @property
    def headers(self) -> dict[str, str]:
        """``Content-Type`` (with the boundary) and ``Content-Length``, for the request."""
        return {"Content-Type": self.content_type, "Content-Length": str(self.length)}

    def _head(self, name: str, upload: FileUpload | None = None) -> bytes:
        disposition = f'form-data; name="{_form_escape(name)}"'
        if upload is None:
            return f"--{self.boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        return (
            f"--{self.boundary}\r\n"
            f'Content-Disposition: {disposition}; filename="{_form_escape(upload.filename)}"\r\n'
            f"Content-Type: {upload.media_type}\r\n\r\n"
        ).encode()

    async def stream(
        self,
        *,
        before_end: Callable[[], Awaitable[None]] | None = None,
        sent: Callable[[int], None] | None = None,
    ) -> AsyncGenerator[bytes, None]:
        """The body, once. ``sent`` is called with the length of each file chunk handed on;
        ``before_end`` is awaited once everything but the closing boundary has been handed
        to the connection (after that the server may have taken the request). Raises what
        :func:`file_chunks` raises."""
        for part in self._fields:
            yield part
        for head, upload in self._files:
            yield head
            async with contextlib.aclosing(file_chunks(upload, sent=sent)) as chunks:
                async for chunk in chunks:
                    yield chunk
            yield b"\r\n"
        if before_end is not None:
            await before_end()
        yield self._end


def _form_escape(value: str) -> str:
    return _FORM_ESCAPE.sub(lambda match: _FORM_ESCAPES[match.group(0)], value)
