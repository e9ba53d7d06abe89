"""The optional health and metrics listener: ``GET /healthz`` and ``GET /metrics``.

A deliberately tiny HTTP/1.1 server on :func:`asyncio.start_server` (no web framework):
one request per connection, bounded request size, per-request and per-check timeouts,
and garbage answered with a 4xx or a closed connection, never an exception. Off by
default; when enabled it should listen on loopback (``health.listen = "127.0.0.1:9464"``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import TypeAlias

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from stenod.errors import ConfigError

__all__ = ["Check", "HealthServer", "LoopLagMonitor", "parse_listen"]

log = structlog.get_logger("stenod.health")

Check: TypeAlias = Callable[[], Awaitable[bool]]


def parse_listen(listen: str) -> tuple[str, int]:
    """Split ``"host:port"`` (``"[::1]:9464"`` for IPv6). Raises ConfigError when malformed."""
    host, sep, port = listen.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f'health.listen = {listen!r} is not host:port (e.g. "127.0.0.1:9464")')
    return host, int(port)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HealthServer:
    """Serves ``/healthz`` (the named checks, as JSON; 200 or 503) and ``/metrics`` (Prometheus).

    Each check is an async callable answering True when healthy; a check that returns
    False, raises or exceeds ``check_timeout`` makes the whole answer 503. ``checks`` is
    read on every request, so checks added to the mapping later are served too.
    """

    def __init__(
        self,
        listen: str,
        checks: Mapping[str, Check],
        registry: CollectorRegistry,
        *,
        check_timeout: float = 2.0,
        request_timeout: float = 5.0,
        max_request_bytes: int = 8192,
        max_connections: int = 16,
    ) -> None:
        """Validate ``listen`` (raises ConfigError) and keep the checks and the registry to serve."""
        self._host, self._port = parse_listen(listen)
        self._checks = checks
        self._registry = registry
        self._check_timeout = check_timeout
        self._request_timeout = request_timeout
        self._max_request_bytes = max_request_bytes
        self._max_connections = max_connections
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self.address: tuple[str, int] | None = None

    async def run(self, stopping: asyncio.Event) -> None:
        """Listen until ``stopping`` is set, then close every connection. Raises OSError if it cannot bind.

        Starts the listener unless :meth:`start` was already called.
        """
        if self._server is None:
            await self.start()
        try:
            await stopping.wait()
        finally:
            await self.aclose()

    async def start(self) -> tuple[str, int]:
        """Bind and start accepting; returns the bound ``(host, port)`` (useful with port 0)."""
        self._server = await asyncio.start_server(self._handle, self._host, self._port, limit=self._max_request_bytes)
        host, port = self._server.sockets[0].getsockname()[:2]
        self.address = (host, port)
        log.info("health.listening", host=host, port=port)
        if not _is_loopback(self._host):
            log.warning("health.not_loopback", host=self._host, hint="/metrics and /healthz have no authentication")
        return self.address

    async def aclose(self) -> None:
        """Stop listening and drop connections still being served."""
        if self._server is not None:
            self._server.close()
        # Abort rather than cancel: a handler then ends on its own (EOF); 3.11's streams log a
        # spurious error for a cancelled client_connected_cb task.
        for writer in self._connections.values():
            writer.transport.abort()
        if self._connections:
            _, late = await asyncio.wait(list(self._connections), timeout=self._check_timeout + 1)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._server is not None:
            # After the connections: from 3.12 wait_closed() also waits for them to finish.
            await self._server.wait_closed()

    async def check(self) -> tuple[bool, dict[str, dict[str, object]]]:
        """Run every check concurrently; ``(all healthy, {name: {"ok": …, "error": …}})``."""
        results: dict[str, dict[str, object]] = {}
        async with asyncio.TaskGroup() as tg:
            for name, check in list(self._checks.items()):
                tg.create_task(self._run_check(name, check, results), name=f"health:{name}")
        return all(r["ok"] for r in results.values()), dict(sorted(results.items()))

    async def _run_check(self, name: str, check: Check, into: dict[str, dict[str, object]]) -> None:
        try:
            async with asyncio.timeout(self._check_timeout):
                ok = bool(await check())
            into[name] = {"ok": ok}
        except TimeoutError:
            into[name] = {"ok": False, "error": f"no answer within {self._check_timeout:g}s"}
        except Exception as exc:  # a crashing check means unhealthy; the report must still be served
            log.warning("health.check_error", check=name, exc_info=True)
            into[name] = {"ok": False, "error": type(exc).__name__}

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None or len(self._connections) >= self._max_connections:
            writer.close()
            return
        self._connections[task] = writer
        try:
            await self._serve_one(reader, writer)
        except (ConnectionError, TimeoutError):
            pass  # client went away or dawdled while we answered; nothing to tell it
        finally:
            self._connections.pop(task, None)
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                async with asyncio.timeout(1):
                    await writer.wait_closed()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(self._request_timeout):
                head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return  # closed before a full request head: no one to answer
        except asyncio.LimitOverrunError:
            await self._respond(writer, HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, b"request too large\n")
            return
        except TimeoutError:
            await self._respond(writer, HTTPStatus.REQUEST_TIMEOUT, b"request timeout\n")
            return
        status, headers, body = await self._route(head)
        await self._respond(writer, status, body, headers, with_body=not head.startswith(b"HEAD "))

    async def _route(self, head: bytes) -> tuple[HTTPStatus, dict[str, str], bytes]:
        request_line, _, header_block = head.decode("latin-1").partition("\r\n")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return HTTPStatus.BAD_REQUEST, {}, b"bad request\n"
        method, target, _ = parts
        path = target.split("?", 1)[0]
        if path not in ("/healthz", "/metrics"):
            return HTTPStatus.NOT_FOUND, {}, b"not found\n"
        if method not in ("GET", "HEAD"):
            return HTTPStatus.METHOD_NOT_ALLOWED, {"Allow": "GET, HEAD"}, b"method not allowed\n"
        if path == "/metrics":
            encoder, content_type = choose_encoder(_header(header_block, "accept") or "")
            return HTTPStatus.OK, {"Content-Type": content_type}, encoder(self._registry)
        healthy, results = await self.check()
        body = json.dumps({"ok": healthy, "checks": results}).encode() + b"\n"
        status = HTTPStatus.OK if healthy else HTTPStatus.SERVICE_UNAVAILABLE
        return status, {"Content-Type": "application/json"}, body

    async def _respond(
        self,
        writer: asyncio.StreamWriter,
        status: HTTPStatus,
        body: bytes,
        headers: Mapping[str, str] | None = None,
        *,
        with_body: bool = True,
    ) -> None:
        fields = {
            "Content-Type": "text/plain; charset=utf-8",
            **(headers or {}),
            "Content-Length": str(len(body)),
            "Cache-Control": "no-store",
            "Connection": "close",
        }
        head = f"HTTP/1.1 {status.value} {status.phrase}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
        writer.write(head.encode("latin-1") + b"\r\n" + (body if with_body else b""))
        async with asyncio.timeout(self._request_timeout):
            await writer.drain()


def _header(block: str, name: str) -> str | None:
    for line in block.split("\r\n"):
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == name:
            return value.strip()
    return None


class LoopLagMonitor:
    """Measures how late the event loop wakes a sleeping task: a "loop responsive" check.

    Run :meth:`run` as a task; :meth:`responsive` is a :data:`Check` for ``/healthz`` and
    the watchdog's health gate. A loop blocked by synchronous work shows up as lag.
    """

    def __init__(self, *, interval: float = 0.5, max_lag: float = 1.0) -> None:
        """Sample every ``interval`` seconds; lag above ``max_lag`` seconds is unresponsive."""
        self._interval = interval
        self._max_lag = max_lag
        self.lag = 0.0

    async def run(self, stopping: asyncio.Event) -> None:
        """Sample the loop's lag until ``stopping`` is set."""
        loop = asyncio.get_running_loop()
        while not stopping.is_set():
            expected = loop.time() + self._interval
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(expected):
                    await stopping.wait()
            self.lag = max(0.0, loop.time() - expected)
            if self.lag > self._max_lag:
                log.warning("health.loop_lag", lag_seconds=round(self.lag, 3))

    async def responsive(self) -> bool:
        """True when the last measured lag was within ``max_lag``."""
        return self.lag <= self._max_lag
