"""The SSRF-safe downloader: one URL into one file, under a :class:`UrlPolicy`.

The connection goes to the address the policy checked, with Host and TLS SNI set to the
name, so a second DNS answer (rebinding) cannot move it; redirects are followed by hand
and every hop is checked again; size and time are capped; free disk space is checked
before writing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import httpx

from stenod.adapters.downloads.url_policy import DownloadFailed, Resolver, UrlPolicy, UrlRefused, system_resolve
from stenod.adapters.folders.writers import safe_stem

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 1 << 16
_CONTENT_TYPES = {
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/wave": "wav",
    "audio/flac": "flac",
    "audio/x-flac": "flac",
    "audio/ogg": "ogg",
    "audio/opus": "opus",
    "audio/mp4": "m4a",
    "audio/aac": "aac",
    "audio/webm": "webm",
    "video/mp4": "mp4",
    "text/plain": "txt",
    "text/html": "html",
    "application/pdf": "pdf",
}


@dataclass(frozen=True, slots=True)
class Downloaded:
    path: Path
    size: int
    device: int
    inode: int


def name_from_url(raw: str) -> str:
    """A safe file name for a URL input (its last path segment), for outputs and uploads."""
    try:
        path = httpx.URL(raw).path
    except (httpx.InvalidURL, ValueError):
        path = ""
    last = unquote(path.rstrip("/").rsplit("/", 1)[-1])
    stem = safe_stem(last) if last else "download"
    ext = last.rsplit(".", 1)[-1].lower() if "." in last else ""
    return f"{stem}.{ext}" if ext.isalnum() and len(ext) <= 8 else stem


class UrlDownloader:
    """Downloads one URL under a :class:`UrlPolicy` into a given file."""

    def __init__(
        self,
        policy: UrlPolicy,
        *,
        max_bytes: int,
        timeout_seconds: float,
        min_free_bytes: int = 0,
        resolver: Resolver = system_resolve,
        verify: ssl.SSLContext | bool = True,
        max_redirects: int = 5,
        user_agent: str = "stenod",
    ) -> None:
        self.policy = policy
        self._max_bytes = max_bytes
        self._timeout = timeout_seconds
        self._min_free = min_free_bytes
        self._resolver = resolver
        self._max_redirects = max_redirects
        self._client = httpx.AsyncClient(
            verify=verify,
            trust_env=False,
            follow_redirects=False,
            headers={"User-Agent": user_agent},
            timeout=httpx.Timeout(min(60.0, timeout_seconds), connect=10.0),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def fetch(self, raw: str, target: Path) -> Downloaded:
        """Download ``raw`` to ``target`` (created atomically). Raises UrlRefused or DownloadFailed."""
        try:
            async with asyncio.timeout(self._timeout):
                return await self._fetch(raw, target)
        except TimeoutError as exc:
            raise DownloadFailed(
                "download_timeout", f"the download took longer than {self._timeout:.0f} s", retryable=True
            ) from exc
        except httpx.HTTPError as exc:
            raise DownloadFailed("download_failed", f"{type(exc).__name__}: {exc}", retryable=True) from exc

    async def _fetch(self, raw: str, target: Path) -> Downloaded:
        url = self.policy.check_syntax(raw)
        for _ in range(self._max_redirects + 1):
            address = await self.policy.resolve(url, self._resolver)
            request = self._client.build_request(
                "GET",
                url.copy_with(host=address),
                headers={"Host": url.netloc.decode("ascii")},
                extensions={"sni_hostname": url.host} if url.scheme == "https" else {},
            )
            response = await self._client.send(request, stream=True)
            try:
                if response.status_code in _REDIRECTS and "location" in response.headers:
                    url = self.policy.check_syntax(str(url.join(response.headers["location"])))
                    continue
                if response.status_code >= 400:
                    raise DownloadFailed(
                        f"http_{response.status_code}",
                        f"the server answered {response.status_code}",
                        retryable=response.status_code == 429 or response.status_code >= 500,
                    )
                if response.status_code != 200:
                    raise DownloadFailed(
                        "unexpected_status", f"the server answered {response.status_code}", retryable=False
                    )
                return await self._save(response, target)
            finally:
                await response.aclose()
        raise UrlRefused(f"more than {self._max_redirects} redirects")

    async def _save(self, response: httpx.Response, target: Path) -> Downloaded:
        length = response.headers.get("content-length")
        expected = int(length) if length and length.isdigit() else 0
        if expected > self._max_bytes:
            raise DownloadFailed(
                "too_large", f"the file is {expected:,} bytes; the limit is {self._max_bytes:,}", retryable=False
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(target.parent).free
        if free - expected < self._min_free:
            raise DownloadFailed("disk_full", f"only {free:,} bytes free in {target.parent}", retryable=True)
        tmp = target.with_name(f".{target.name}.part")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        size = 0
        try:
            async for chunk in response.aiter_bytes(_CHUNK):
                size += len(chunk)
                if size > self._max_bytes:
                    raise DownloadFailed(
                        "too_large", f"the file is over the limit of {self._max_bytes:,} bytes", retryable=False
                    )
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
            os.fsync(fd)
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        os.close(fd)
        os.replace(tmp, target)
        return Downloaded(target, size, st.st_dev, st.st_ino)
