"""uvicorn serving the FastAPI app inside the daemon's own event loop.

The socket is bound in :meth:`HttpServer.bind`, at start-up, so a busy port is a clear
configuration error (exit 2) rather than uvicorn's ``sys.exit`` from inside the loop.
uvicorn's own main loop (a tick every 100 ms, and signal handlers that would replace the
daemon's) is not used: the server is started, its Date header refreshed once a second, and
shut down when ``stopping`` is set, giving open requests a few seconds to finish. A
synchronous call still waiting then answers 503; its job goes on after the restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Sequence

import structlog
import uvicorn
from fastapi import FastAPI
from pydantic import IPvAnyNetwork

from stenod.errors import ConfigError
from stenod.settings_loading import is_loopback, parse_listen

__all__ = ["HttpServer"]

log = structlog.get_logger("stenod.http")

_GRACE_SECONDS = 5.0


class HttpServer:
    def __init__(
        self,
        app: FastAPI,
        listen: str,
        *,
        trusted_proxies: Sequence[IPvAnyNetwork] = (),
        stopping: asyncio.Event | None = None,
    ) -> None:
        self._app = app
        self._trusted_proxies = [str(network) for network in trusted_proxies]
        self._stopping = stopping  # the routes' view of shutdown: waiting calls answer 503
        self._host, self._port = parse_listen(listen)
        self._socket: socket.socket | None = None
        self.address: tuple[str, int] | None = None

    def bind(self) -> tuple[str, int]:
        """Bind the listening socket; ConfigError when the address cannot be had."""
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        # IPPROTO_TCP, not 0: asyncio turns TCP_NODELAY on only for sockets that say they are
        # TCP, and without it every answer's body waits ~40 ms for the client's delayed ACK.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, self._port))
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"http.listen = {self._host}:{self._port} cannot be used: {exc.strerror} "
                "(another program on that port? pick another in [http] listen, or STENOD_HTTP__LISTEN=127.0.0.1:8001)"
            ) from exc
        sock.listen(1024)
        sock.setblocking(False)
        self._socket = sock
        self.address = sock.getsockname()[:2]
        return self.address

    async def run(self, stopping: asyncio.Event) -> None:
        """Serve until ``stopping``; then stop accepting and let requests in progress end."""
        if self._socket is None:
            self.bind()
        assert self._socket is not None
        config = uvicorn.Config(
            self._app,
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=int(_GRACE_SECONDS),
            timeout_keep_alive=30,
            limit_concurrency=1000,
            # X-Forwarded-For/-Proto only from the proxies the user names (uvicorn's default
            # believes any loopback peer: a spoofed header would pass for a keyless address).
            proxy_headers=bool(self._trusted_proxies),
            forwarded_allow_ips=self._trusted_proxies,
        )
        server = uvicorn.Server(config)
        config.load()  # what uvicorn's own serve() does before startup()
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[self._socket])
        host, port = self.address or (self._host, self._port)
        shown = f"[{host}]" if ":" in host else host
        loopback = is_loopback(self._host)
        log.info("http.listening", url=f"http://{shown}:{port}/", host=host, port=port, loopback=loopback)
        try:
            while not stopping.is_set():
                await server.on_tick(0)  # counter 0: refresh the Date header
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await stopping.wait()
        finally:
            if self._stopping is not None:
                self._stopping.set()
            server.should_exit = True
            await server.shutdown(sockets=[self._socket])
            self._socket.close()
            log.info("http.stopped")
