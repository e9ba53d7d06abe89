"""A streaming ``multipart/form-data`` body whose exact length is known before sending.

httpx's own multipart encoder reads files synchronously on the event loop; this one
reads them in a worker thread, sends ``Content-Length`` (Vachana limits the whole body),
and lets the caller act just before the final boundary leaves, the moment after which
the server may have accepted the request.
"""

from __future__ import annotations

import asyncio
import mimetypes
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from stenod.provider import BatchItem, PermanentError

_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class FilePart:
    field: str
    filename: str
    item: BatchItem


class MultipartBody:
    """Text fields then file parts, framed with a random boundary."""

    def __init__(self, fields: Sequence[tuple[str, str]], files: Sequence[FilePart]) -> None:
        self.boundary = secrets.token_hex(16)
        self._fields = [self._field_part(name, value) for name, value in fields]
        self._files = [(self._file_head(part), part.item) for part in files]
        self._end = f"--{self.boundary}--\r\n".encode()
        self.length = (
            sum(map(len, self._fields)) + sum(len(head) + item.size + 2 for head, item in self._files) + len(self._end)
        )

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def _field_part(self, name: str, value: str) -> bytes:
        return f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()

    def _file_head(self, part: FilePart) -> bytes:
        filename = part.filename.replace("\\", "\\\\").replace('"', "%22").replace("\r", "").replace("\n", "")
        content_type = mimetypes.guess_type(part.filename)[0] or "application/octet-stream"
        return (
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="{part.field}"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()

    async def stream(
        self, *, before_end: Callable[[], Awaitable[None]], sent: Callable[[int], None]
    ) -> AsyncIterator[bytes]:
        """The body. ``before_end`` is awaited once everything but the closing boundary
        has been handed to the connection. Raises PermanentError if an input changed."""
        for part in self._fields:
            yield part
        for head, item in self._files:
            yield head
            with item.open() as source:
                remaining = item.size
                while remaining:
                    chunk = await asyncio.to_thread(source.read, min(_CHUNK, remaining))
                    if not chunk:
                        raise PermanentError(
                            f"input file {item.path} shrank while it was being uploaded", code="input_changed"
                        )
                    remaining -= len(chunk)
                    sent(len(chunk))
                    yield chunk
            yield b"\r\n"
        await before_end()
        yield self._end
