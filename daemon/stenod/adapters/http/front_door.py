"""The HTTP front door: what every request must pass before it is routed or its body read.

- Its ``Host`` is one of this server's names (loopback, an IP address, this machine's names,
  the listen address, ``[http] allowed_hosts``), else 421: a page on an attacker's name that
  resolves to this machine (DNS rebinding) gets nothing.
- A state-changing request (POST, PUT, PATCH, DELETE) from a browser comes from this site:
  an ``Origin`` other than the request's own (or a name in ``allowed_hosts``) or a
  ``Sec-Fetch-Site`` of ``cross-site``/``same-site`` is refused with 403, keys or not.
  Programs (curl, the SDKs, Bazarr) send neither header and pass.
- A body over its route's cap is refused with 413 as soon as that is known: at once when
  ``Content-Length`` says so, else when the count passes the cap while the route reads it.
  Uploads are capped by the spool instead (``[http] max_upload_bytes``), as they stream.

An error answered before the request's body was read closes the connection
(``Connection: close``): what the client still sends is never read.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stenod.adapters.http.errors import ApiError

__all__ = ["FORM_BYTES", "BodyTooLarge", "FrontDoor", "HostNames", "host_of"]

FORM_BYTES = 64 * 1024  # the page's forms, sign-in and every other small body
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_UPLOADS = frozenset({"/v1/audio/transcriptions", "/v1/audio/translations", "/asr", "/detect-language", "/upload"})
_JOBS = "/v1/jobs"


class BodyTooLarge(ApiError):
    """The body passed its route's cap while it was read."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            f"the request body is larger than this route's limit of {limit:,} bytes",
            code="body_too_large",
            headers={"Connection": "close"},
        )


def host_of(value: str) -> str | None:
    """The lower-case name or address in a ``Host`` value (``[::1]:8000`` → ``::1``)."""
    try:
        parts = urlsplit(f"//{value}")
        _ = parts.port  # raises for a malformed port
    except ValueError:
        return None
    return (parts.hostname or "").rstrip(".") or None


class HostNames:
    """The names this server answers to: any IP address (a rebinding attack needs a name),
    ``localhost``, this machine's names, the listen address and the configured names."""

    def __init__(self, listen_host: str, configured: Iterable[str] = ()) -> None:
        self.configured = frozenset(name.lower().rstrip(".") for name in configured)
        own = {"localhost", listen_host.lower(), socket.gethostname().lower(), socket.getfqdn().lower()}
        self._names = frozenset(own) | self.configured

    def allows(self, host: str | None) -> bool:
        if host is None:
            return False
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return host in self._names
        return True


class FrontDoor:
    """Pure ASGI: answers before calling the app (and before any ``receive()``) when a request
    may not pass; counts the body of the requests it lets in against their cap."""

    def __init__(self, app: ASGIApp, *, hosts: HostNames, json_bytes: int) -> None:
        self.app = app
        self.hosts = hosts
        self.json_bytes = json_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        body_pending = bool(headers.get("transfer-encoding")) or headers.get("content-length", "0") != "0"
        closing = _Closing(send, body_pending)
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            await refusal.response()(scope, receive, closing.send)
            return
        cap = self._cap(scope, headers)
        counted = closing.counting(receive, cap) if cap is not None else closing.watching(receive)
        await self.app(scope, counted, closing.send)

    def _refusal(self, scope: Scope, headers: Headers) -> ApiError | None:
        host_header = headers.get("host")
        if host_header is not None and not self.hosts.allows(host_of(host_header)):
            return ApiError(
                421,
                "this server does not answer to that name; add it to [http] allowed_hosts if it is this server's",
                code="unknown_host",
            )
        if scope["method"] in _UNSAFE:
            origin = headers.get("origin")
            if origin is not None and not self._origin_allowed(origin, host_header):
                return ApiError(403, "requests from other sites' pages are refused", code="cross_site")
            if headers.get("sec-fetch-site") in ("cross-site", "same-site"):
                return ApiError(403, "requests from other sites' pages are refused", code="cross_site")
        cap = self._cap(scope, headers)
        declared = headers.get("content-length")
        if cap is not None and declared is not None and (not declared.isdigit() or int(declared) > cap):
            return BodyTooLarge(cap)
        return None

    def _origin_allowed(self, origin: str, host_header: str | None) -> bool:
        """This site's own origin (scheme aside: a TLS proxy changes it), or a configured name."""
        try:
            parts = urlsplit(origin)
        except ValueError:
            return False
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False  # "null": a sandboxed frame, a file, a redirect from elsewhere
        if host_header is not None and parts.netloc.lower() == host_header.lower():
            return True
        return (parts.hostname or "") in self.hosts.configured

    def _cap(self, scope: Scope, headers: Headers) -> int | None:
        path = scope["path"]
        multipart = headers.get("content-type", "").lower().startswith("multipart/")
        if path in _UPLOADS or (path == _JOBS and multipart):
            return None  # the spool streams and caps uploads
        return self.json_bytes if path == _JOBS else FORM_BYTES


class _Closing:
    """Adds ``Connection: close`` to an error answered while the body is still unread."""

    def __init__(self, send: Send, body_pending: bool) -> None:
        self._send = send
        self.body_pending = body_pending

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] >= 400 and self.body_pending:
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
            message = {**message, "headers": [*headers, (b"connection", b"close")]}
        await self._send(message)

    def watching(self, receive: Receive) -> Receive:
        async def received() -> Message:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                self.body_pending = False
            return message

        return received

    def counting(self, receive: Receive, cap: int) -> Receive:
        seen = 0
        watched = self.watching(receive)

        async def received() -> Message:
            nonlocal seen
            message = await watched()
            seen += len(message.get("body", b""))
            if seen > cap:
                self.body_pending = True  # the rest is never read
                raise BodyTooLarge(cap)
            return message

        return received
