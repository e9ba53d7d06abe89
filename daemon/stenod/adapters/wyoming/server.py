"""The Wyoming listener: a TCP server whose connections are tasks of its own TaskGroup.

Not ``wyoming.server.AsyncTcpServer``: it starts every handler with a bare
``create_task`` and its ``stop`` does not wait for them. Here :meth:`run` holds a
TaskGroup for the sessions; on ``stopping`` it closes the socket, withdraws the zeroconf
announcement, ends each session at its next read (a command being transcribed is
answered first) and returns once all have ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from wyoming.error import Error
from wyoming.event import async_write_event
from wyoming.info import Info

from stenod.voice.commands import VoiceCommands
from stenod.voice.kept import HeardCommand

from .announce import Announcement
from .metrics import WyomingMetrics
from .session import SessionLimits, WyomingSession

__all__ = ["ListenerSettings", "WyomingServer"]

log = structlog.get_logger("stenod.wyoming")


@dataclass(frozen=True, slots=True)
class ListenerSettings:
    host: str
    port: int
    zeroconf_name: str | None  # None: no announcement
    max_clients: int
    limits: SessionLimits


class WyomingServer:
    """Accepts Wyoming clients and runs a :class:`WyomingSession` for each."""

    def __init__(
        self,
        settings: ListenerSettings,
        commands: VoiceCommands,
        info: Callable[[], Info],
        metrics: WyomingMetrics,
        keep: Callable[[HeardCommand], Awaitable[object]] | None = None,
    ) -> None:
        self._settings = settings
        self._keep = keep  # [wyoming] keep: journal each answered command
        self._commands = commands
        self._info = info
        self._metrics = metrics
        self._server: asyncio.Server | None = None
        self._sessions: asyncio.TaskGroup | None = None
        self._open: set[WyomingSession] = set()
        self._serving = False

    @property
    def port(self) -> int:
        """The bound port (the configured one, or the one chosen for port 0)."""
        if self._server is None or not self._server.sockets:
            return self._settings.port
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def bind(self) -> None:
        """Open the socket now, so that a busy port fails the start (OSError), not later."""
        s = self._settings
        self._server = await asyncio.start_server(
            self._accept, s.host, s.port, start_serving=False, family=socket.AF_UNSPEC, reuse_address=True
        )

    async def healthy(self) -> bool:
        """For ``/healthz``: whether the listener accepts connections."""
        return self._serving

    async def run(self, stopping: asyncio.Event) -> None:
        """Serve until ``stopping``, then end every session (see the module docstring)."""
        if self._server is None:
            await self.bind()
        assert self._server is not None
        announcement = None
        async with asyncio.TaskGroup() as sessions:
            self._sessions = sessions
            await self._server.start_serving()
            self._serving = True
            self._metrics.listening(True)
            log.info("wyoming.listening", host=self._settings.host, port=self.port)
            if self._settings.zeroconf_name:
                announcement = await self._announce(self._settings.zeroconf_name)
            try:
                await stopping.wait()
            finally:
                self._serving = False
                self._metrics.listening(False)
                self._server.close()
                if announcement is not None:
                    await announcement.withdraw()
                for session in list(self._open):
                    session.close()
        await self._server.wait_closed()
        log.info("wyoming.stopped")

    async def _announce(self, name: str) -> Announcement | None:
        try:
            announcement = Announcement(name, self._settings.host, self.port)
            await announcement.publish()
        except OSError as exc:
            log.warning("wyoming.not_announced", error=str(exc), hint="add the Wyoming integration by host and port")
            return None
        return announcement

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._sessions is None or not self._serving:
            writer.close()
            return
        peer = writer.get_extra_info("peername")
        name = f"wyoming:{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "wyoming:client"
        self._sessions.create_task(self._serve(reader, writer), name=name)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._open) >= self._settings.max_clients:
            text = f"stenod serves {self._settings.max_clients} Wyoming clients at once; try again shortly"
            with contextlib.suppress(ConnectionError):
                await async_write_event(Error(text=text, code="too_many_clients").event(), writer)
            writer.close()
            return
        session = WyomingSession(
            reader, writer, self._commands, self._info, self._metrics, self._settings.limits, self._keep
        )
        self._open.add(session)
        self._metrics.client(+1)
        try:
            await session.run()
        finally:
            self._open.discard(session)
            self._metrics.client(-1)
