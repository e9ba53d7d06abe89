"""Which URLs may be fetched (reliability §2.6, R16): https only unless ``allow_http_urls``;
no credentials in URLs; every address the name resolves to must be public (not loopback,
private, link-local, CGNAT, ULA, multicast, unspecified or reserved) unless
``allow_private_urls``, an IPv6 address judged by the IPv4 one it carries. The request
checks and the downloader both ask this policy.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeAlias

import httpx

from stenod.errors import StenodError

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver: TypeAlias = Callable[[str, int], Awaitable[Sequence[str]]]


class UrlRefused(StenodError):
    """A URL (or a redirect hop) that policy does not allow. Never retried."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DownloadFailed(StenodError):
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
