"""Upload bodies of the plugin API: httpx's multipart encoding, exact length, reads off the loop."""

from __future__ import annotations

import io
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

import httpx
import pytest

from stenod.provider import BatchItem, FileUpload, MultipartBody, PermanentError, file_chunks


def item(tmp_path: Path, name: str, data: bytes) -> BatchItem:
    path = tmp_path / name
    path.write_bytes(data)
    st = os.stat(path)
    return BatchItem(name, path, name, st.st_size, None, st.st_dev, st.st_ino)


def upload(it: BatchItem, filename: str | None = None, content_type: str | None = None) -> FileUpload:
    return FileUpload(filename or it.name, it.size, it.open, content_type)


async def collect(chunks: AsyncIterator[bytes]) -> list[bytes]:
    return [chunk async for chunk in chunks]


async def test_multipart_length_is_exact_and_the_hook_runs_before_the_closing_boundary(tmp_path: Path) -> None:
    parts = [
        ("audio_files", upload(item(tmp_path, "a.wav", b"A" * 3_000_000))),
        ("audio_files", upload(item(tmp_path, "b.wav", b"B" * 10), 'q"b.wav')),
    ]
    body = MultipartBody([("language_code", "hi-IN")], parts)
    chunks: list[bytes] = []
    hook_at: list[int] = []
    sent: list[int] = []

    async def before_end() -> None:
        hook_at.append(len(chunks))

    async for chunk in body.stream(before_end=before_end, sent=sent.append):
        chunks.append(chunk)
    data = b"".join(chunks)
    assert len(data) == body.length == int(body.headers["Content-Length"])
    assert hook_at == [len(chunks) - 1] and chunks[-1] == f"--{body.boundary}--\r\n".encode()
    assert sum(sent) == 3_000_010
    assert b'filename="q%22b.wav"' in data


@pytest.mark.parametrize(
    "filename", ["call.wav", 'q"uote.mp3', "back\\slash.ogg", "line\nbreak\r.m4a", "tab\tesc\x1b.docx", "日本語.txt"]
)
async def test_multipart_body_is_byte_for_byte_what_httpx_encodes(tmp_path: Path, filename: str) -> None:
    audio = item(tmp_path, "a.bin", os.urandom(70_000))
    glossary = item(tmp_path, "g.csv", b"hello,bonjour\n")
    fields = [("model", "Whisper-Large-V3"), ("language", "hi"), ("note", 'naïve "q"')]
    body = MultipartBody(
        fields,
        [("audio", upload(audio, filename, "audio/mpeg")), ("glossary", upload(glossary, "g.csv"))],
    )
    with audio.path.open("rb") as a, glossary.path.open("rb") as g:
        expected = httpx.Request(
            "POST",
            "http://fake/transcribe",
            data=dict(fields),
            files=[("audio", (filename, a, "audio/mpeg")), ("glossary", ("g.csv", g))],
            headers={"Content-Type": body.content_type},
        )
        expected_bytes = expected.read()
    assert b"".join(await collect(body.stream())) == expected_bytes
    assert expected.headers["Content-Length"] == body.headers["Content-Length"]


async def test_a_file_that_shrank_fails_the_upload_as_a_changed_input(tmp_path: Path) -> None:
    it = item(tmp_path, "a.wav", b"A" * 100)
    short = FileUpload("a.wav", 200, lambda: it.path.open("rb"))
    with pytest.raises(PermanentError) as info:
        await collect(file_chunks(short))
    assert info.value.code == "input_changed"


@pytest.mark.parametrize("size", [0, 100, 3 << 20])
async def test_a_file_that_grew_fails_before_its_last_chunk_is_handed_on(tmp_path: Path, size: int) -> None:
    it = item(tmp_path, "a.wav", b"A" * (size + 1))
    chunks: list[bytes] = []
    with pytest.raises(PermanentError) as info:
        async for chunk in file_chunks(FileUpload("a.wav", size, lambda: it.path.open("rb"))):
            chunks.append(chunk)
    assert info.value.code == "input_changed"
    assert sum(map(len, chunks)) < size or size == 0


@pytest.mark.parametrize("size", [0, 1, 1 << 20, (3 << 20) + 5])
async def test_a_file_of_the_declared_size_is_sent_whole(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    it = item(tmp_path, "a.wav", data)
    sent: list[int] = []
    assert b"".join(await collect(file_chunks(upload(it), sent=sent.append))) == data
    assert sum(sent) == size


async def test_a_replaced_input_fails_before_anything_is_read(tmp_path: Path) -> None:
    it = item(tmp_path, "a.wav", b"A" * 100)
    it.path.write_bytes(b"B" * 101)
    with pytest.raises(PermanentError) as info:
        await collect(file_chunks(upload(it)))
    assert info.value.code == "input_changed"


class ThreadRecordingFile(io.BytesIO):
    """An in-memory file that notes which thread read it."""

    def __init__(self, data: bytes, threads: list[int]) -> None:
        super().__init__(data)
        self._threads = threads

    def read(self, size: int | None = -1) -> bytes:
        self._threads.append(threading.get_ident())
        return super().read(size)


async def test_files_are_opened_and_read_off_the_event_loop_thread() -> None:
    threads: list[int] = []

    def open_file() -> IO[bytes]:
        threads.append(threading.get_ident())
        return ThreadRecordingFile(b"x" * 3_000_000, threads)

    body = MultipartBody([("a", "b")], [("audio", FileUpload("a.wav", 3_000_000, open_file))])
    data = b"".join(await collect(body.stream()))
    assert len(data) == body.length
    assert len(threads) >= 4 and threading.get_ident() not in threads
