"""The daemon's side of the relay process (:mod:`stenod.adapters.amqp.relay_worker`).

The relay publishes every event and reads every confirmation; in the daemon's process
that was a third of its CPU under load, all of it competing with intake for one core.
In a child it runs on the other core. The daemon keeps the journal to itself: the child
only reads the outbox, and the rows it reports confirmed are deleted here.

The child is started with the daemon's services and restarted if it exits early (its
unconfirmed rows are simply published again: events are at least once). On stop it is
asked to finish the batch in hand (``q``), then given ``_STOP_SECONDS`` before SIGKILL.
If the daemon dies, the child's stdin closes and it exits by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from typing import Any, Protocol

import structlog

from stenod.journal import Journal
from stenod.settings import Settings

log = structlog.get_logger("stenod.amqp")

_STOP_SECONDS = 15.0  # within systemd's TimeoutStopSec, above a publish timeout
_DEPTH_EVERY_SECONDS = 5.0
_MAX_LINE = 1 << 24  # a report of 500 confirmed seqs is a few kB


class DepthGauge(Protocol):
    def set_outbox_depth(self, depth: int) -> None: ...


class RelayProcess:
    """Runs and supervises the relay child; deletes the rows it reports confirmed."""

    def __init__(self, settings: Settings, journal: Journal, *, metrics: DepthGauge | None = None) -> None:
        self._settings = settings
        self._journal = journal
        self._metrics = metrics

    def _config_line(self) -> bytes:
        amqp = self._settings.amqp.model_dump(mode="json")
        amqp["url"] = self._settings.amqp.url.get_secret_value() if self._settings.amqp.url else None
        config: dict[str, Any] = {
            # Where the child reads the outbox: the SQLite file, or the database (a secret, like the broker's URL).
            "journal": {"path": str(self._settings.journal_path), "url": self._settings.journal_url},
            "amqp": amqp,
            "log_format": self._settings.log_format,
            "log_level": self._settings.log_level,
        }
        return json.dumps(config).encode() + b"\n"

    async def run(self, stopping: asyncio.Event) -> None:
        """Keep one child running until ``stopping``; then stop it gracefully."""
        pause = self._settings.amqp.reconnect_interval_seconds
        while not stopping.is_set():
            started = time.monotonic()
            code = await self._incarnation(stopping)
            if stopping.is_set():
                break
            log.error("amqp.relay_exited", exit_code=code, restart_in_seconds=pause)
            # A child that keeps dying at once is restarted at most every few seconds.
            wait = pause if time.monotonic() - started > 60 else max(pause, 5.0)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await stopping.wait()

    async def _incarnation(self, stopping: asyncio.Event) -> int | None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "stenod.adapters.amqp.relay_worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=_MAX_LINE,
        )
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(self._config_line())
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(self._command(proc, stopping), name="relay:command"),
                    tg.create_task(self._wake_on(stopping), name="relay:stop"),
                ]
                await self._receive(proc.stdout)
                for task in tasks:  # the child is gone (its stdout closed): nothing more to tell it
                    task.cancel()
            return await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    async def _receive(self, stdout: asyncio.StreamReader) -> None:
        """Delete the rows the child reports confirmed, until its stdout closes."""
        while line := await stdout.readline():
            try:
                seqs = [int(s) for s in json.loads(line)["confirmed"]]
            except (ValueError, KeyError, TypeError):
                log.warning("amqp.relay_said", line=line[:200].decode(errors="replace"))
                continue
            await self._journal.outbox_delete(seqs)

    async def _wake_on(self, stopping: asyncio.Event) -> None:
        await stopping.wait()
        self._journal.outbox_ready.set()

    async def _command(self, proc: asyncio.subprocess.Process, stopping: asyncio.Event) -> None:
        """Tell the child about new rows (one ``w`` per wake-up, however many commits), and
        when stopping, ask it to finish; kill it if it has not within ``_STOP_SECONDS``."""
        ready = self._journal.outbox_ready
        depth_at = 0.0
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_DEPTH_EVERY_SECONDS):
                    await ready.wait()
            if stopping.is_set():
                break
            if ready.is_set():
                ready.clear()
                if not await self._send(proc, b"w\n"):
                    return
            if self._metrics is not None and time.monotonic() - depth_at >= _DEPTH_EVERY_SECONDS:
                depth_at = time.monotonic()
                self._metrics.set_outbox_depth(await self._journal.outbox_depth())
        await self._send(proc, b"q\n")
        try:
            async with asyncio.timeout(_STOP_SECONDS):
                await proc.wait()
        except TimeoutError:
            log.warning("amqp.relay_stop_timeout", seconds=_STOP_SECONDS)
            proc.kill()

    @staticmethod
    async def _send(proc: asyncio.subprocess.Process, line: bytes) -> bool:
        assert proc.stdin is not None
        try:
            proc.stdin.write(line)
            await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            return False  # it exited; _receive sees its stdout close
        return True
