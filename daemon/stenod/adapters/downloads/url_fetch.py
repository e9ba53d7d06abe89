"""URL inputs: an SSRF-safe downloader and the service that fetches pending URL items.

Rules (reliability §2.6, R16): https only unless ``allow_http_urls``; no credentials in
URLs; every address the name resolves to must be public (not loopback, private,
link-local, CGNAT, ULA, multicast, unspecified or reserved) unless
``allow_private_urls``; the connection goes to the address that was checked, with
Host and TLS SNI set to the name, so a second DNS answer (rebinding) cannot move it;
redirects are followed by hand and every hop is checked again; size and time are
capped; free disk space is checked before writing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import shutil
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias
from urllib.parse import unquote

import httpx
import structlog

from stenod.adapters.folders.writers import safe_stem
from stenod.errors import ErrorInfo
from stenod.jobs import ItemState
from stenod.journal import ItemOutcome, Journal, OpenItem, accepted_elsewhere

log = structlog.get_logger("stenod.url_fetch")

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver: TypeAlias = Callable[[str, int], Awaitable[Sequence[str]]]

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


class UrlRefused(Exception):
    """A URL (or a redirect hop) that policy does not allow. Never retried."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DownloadFailed(Exception):
    """A download that did not complete; ``retryable`` for network errors, 429 and 5xx."""

    def __init__(self, code: str, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable


async def system_resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (A and AAAA)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def embedded_addresses(ip: IPAddress) -> tuple[IPAddress, ...]:
    """The addresses a connection to ``ip`` reaches: the IPv4 ones inside an IPv4-mapped,
    6to4 (``2002::/16``) or Teredo (``2001::/32``: its server and its client) address,
    else ``ip`` itself."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return (ip.ipv4_mapped,)
        if ip.sixtofour is not None:
            return (ip.sixtofour,)
        if ip.teredo is not None:
            return ip.teredo
    return (ip,)


@dataclass(frozen=True, slots=True)
class UrlPolicy:
    """Which URLs and addresses may be fetched. ``allowed_networks`` are allowed even when private."""

    allow_http: bool = False
    allow_private: bool = False
    allowed_networks: tuple[IPNetwork, ...] = ()

    def check_syntax(self, raw: str) -> httpx.URL:
        """Parse and check scheme, host and credentials. Raises UrlRefused."""
        try:
            url = httpx.URL(raw)
        except (httpx.InvalidURL, ValueError) as exc:
            raise UrlRefused(f"not a valid URL: {exc}") from exc
        schemes = ("https", "http") if self.allow_http else ("https",)
        if url.scheme not in schemes:
            raise UrlRefused(f"scheme {url.scheme or '(none)'!r} is not allowed (allowed: {', '.join(schemes)})")
        if not url.host:
            raise UrlRefused("the URL has no host")
        if url.userinfo:
            raise UrlRefused("credentials in URLs are not accepted")
        return url

    def check_address(self, text: str) -> None:
        """Refuse an address that is not public (unless allowed). Raises UrlRefused.

        An IPv6 address that carries an IPv4 one (mapped, 6to4, Teredo) is judged as the
        IPv4 inside: a relay or a dual stack delivers it there, so ``2002:7f00:1::`` is
        loopback however global its IPv6 prefix looks.
        """
        for ip in embedded_addresses(ipaddress.ip_address(text.split("%", 1)[0])):
            self._check_one(ip)

    def _check_one(self, ip: IPAddress) -> None:
        if any(ip in net for net in self.allowed_networks):
            return
        if ip.is_multicast or ip.is_unspecified or ip.is_reserved:
            raise UrlRefused(f"address {ip} is multicast, unspecified or reserved")
        if not ip.is_global and not self.allow_private:
            raise UrlRefused(
                f"address {ip} is loopback, private, link-local or otherwise not public "
                "(set amqp.allow_private_urls to allow it)"
            )

    async def resolve(self, url: httpx.URL, resolver: Resolver) -> str:
        """The checked address to connect to for ``url``. Every answer must pass."""
        host = url.host
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            self.check_address(host)
            return host
        if host.rstrip(".").lower() in ("localhost", "localhost.localdomain") and not self.allow_private:
            raise UrlRefused("localhost is not allowed")
        try:
            addresses = await resolver(host, url.port or (443 if url.scheme == "https" else 80))
        except (OSError, UnicodeError) as exc:
            raise DownloadFailed("dns_failed", f"cannot resolve {host}: {exc}", retryable=True) from exc
        if not addresses:
            raise DownloadFailed("dns_failed", f"{host} has no address", retryable=True)
        for address in addresses:
            self.check_address(address)
        return addresses[0]


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


def _extension(item: OpenItem) -> str:
    ext = item.name.rsplit(".", 1)[-1].lower() if "." in item.name else ""
    return ext if ext.isalnum() and len(ext) <= 8 else "bin"


@dataclass(slots=True)
class _Attempts:
    count: int = 0
    not_before: float = 0.0


@dataclass(slots=True)
class UrlFetchService:
    """Finds pending URL items in the journal and downloads them, a few at a time.

    A downloaded item gets its local file (``attach_download``) and the dispatcher is
    notified; a refused or failed download fails the item with an error a person can
    act on. Interrupted downloads restart from scratch on the next run.
    """

    journal: Journal
    downloader: UrlDownloader
    notify: Callable[[], None]
    root: Path
    concurrency: int = 4
    max_attempts: int = 3
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _active: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _attempts: dict[str, _Attempts] = field(default_factory=dict)

    def wake(self) -> None:
        """New URL items were committed."""
        self._wake.set()

    async def run(self, stopping: asyncio.Event) -> None:
        """Download until ``stopping``; in-flight downloads are then abandoned (they restart later)."""
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._relay_stop(stopping), name="url-fetch:stop")
                while not stopping.is_set():
                    self._wake.clear()
                    delay = await self._launch(tg)
                    try:
                        async with asyncio.timeout(delay):
                            await self._wake.wait()
                    except TimeoutError:
                        pass
                for task in self._active.values():
                    task.cancel()
        finally:
            await self.downloader.aclose()

    async def _relay_stop(self, stopping: asyncio.Event) -> None:
        await stopping.wait()
        self._wake.set()

    async def _launch(self, tg: asyncio.TaskGroup) -> float:
        """Start due downloads; returns seconds until the next retry is due (or a rescan)."""
        now = time.monotonic()
        wait = 60.0
        for item in await self.journal.open_items():
            if item.path is not None or not item.input.startswith(("http://", "https://")) or item.cancel_requested:
                continue
            if accepted_elsewhere(self.journal, item):
                continue  # the instance that accepted the job downloads it: the file lands where it is packed
            if item.item_id in self._active:
                continue
            due = self._attempts.get(item.item_id, _Attempts()).not_before
            if due > now:
                wait = min(wait, due - now)
                continue
            if len(self._active) >= self.concurrency:
                break
            self._active[item.item_id] = tg.create_task(self._download(item), name=f"url-fetch:{item.item_id}")
        return wait

    async def _download(self, item: OpenItem) -> None:
        target = self.root / item.job_id / f"{item.item_id}.{_extension(item)}"
        try:
            with structlog.contextvars.bound_contextvars(job_id=item.job_id, item_id=item.item_id):
                try:
                    got = await self.downloader.fetch(item.input, target)
                except UrlRefused as exc:
                    await self._fail(
                        item,
                        ErrorInfo(
                            "url_not_allowed",
                            exc.reason,
                            hint="Use a public https URL, or change amqp.allow_* settings.",
                        ),
                    )
                    return
                except DownloadFailed as exc:
                    await self._failed_attempt(item, exc)
                    return
                except OSError as exc:
                    await self._failed_attempt(
                        item, DownloadFailed("download_io", f"cannot write {target}: {exc}", retryable=True)
                    )
                    return
                await self.journal.attach_download(item.item_id, str(got.path), got.size, got.device, got.inode)
                self._attempts.pop(item.item_id, None)
                log.info("url.downloaded", bytes=got.size)
                self.notify()
        finally:
            self._active.pop(item.item_id, None)
            self._wake.set()

    async def _failed_attempt(self, item: OpenItem, exc: DownloadFailed) -> None:
        attempts = self._attempts.setdefault(item.item_id, _Attempts())
        attempts.count += 1
        if exc.retryable and attempts.count < self.max_attempts:
            delay = 2.0 * 2 ** (attempts.count - 1)
            attempts.not_before = time.monotonic() + delay
            log.warning(
                "url.retry_scheduled", code=exc.code, error=exc.message, attempt=attempts.count, delay_seconds=delay
            )
            return
        self._attempts.pop(item.item_id, None)
        message = exc.message if not exc.retryable else f"gave up after {attempts.count} attempts: {exc.message}"
        await self._fail(
            item,
            ErrorInfo(
                exc.code, message, retryable=exc.retryable, hint="Check that the URL is reachable from the stenod host."
            ),
        )

    async def _fail(self, item: OpenItem, error: ErrorInfo) -> None:
        log.warning("url.failed", code=error.code, error=error.message)
        await self.journal.finish_items([ItemOutcome(item.item_id, ItemState.FAILED, error=error)])
