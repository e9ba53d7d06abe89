"""The relay process: publishes the journal's outbox from a child of the daemon.

Started by :class:`stenod.adapters.amqp.relay_process.RelayProcess` as
``python -m stenod.adapters.amqp.relay_worker``, so publishing and its confirmations run on
the other core. Its protocol is lines on its standard streams:

- stdin, first line: the settings as JSON (the broker URL is a secret, so never argv or
  the environment);
- stdin, then: ``w`` (the daemon committed rows) or ``q`` (finish the batch in hand, then
  exit 0). End of input means the daemon is gone: exit at once; the rows stay in the
  outbox for the next daemon;
- stdout: ``{"confirmed": [seq, …]}`` after each batch the broker confirmed; the daemon
  deletes those rows.

It reads the outbox through a connection of its own (read-only on SQLite, where in WAL
mode a reader never blocks the daemon's writer) and never writes the journal. Log lines go to stderr,
which it shares with the daemon.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import structlog

from stenod import logging as stenod_logging
from stenod.adapters.amqp.relay import OutboxRelay
from stenod.adapters.amqp.topology import BrokerLink
from stenod.adapters.sqlite.journal import SqliteOutbox
from stenod.journal import OutboxRow
from stenod.settings import AmqpSettings

log = structlog.get_logger("stenod.amqp")


class OutboxReader:
    """The relay's view of the outbox in this process: rows above a confirmed floor,
    skipping rows confirmed but not yet deleted by the daemon.

    ``floor``: the outbox reads only rows above it (SQLite, whose one writer commits rows in
    sequence order). PostgreSQL's outbox reads from the lowest row whatever the floor (a
    late commit can add a row below one already read), so there confirmed rows are kept
    and skipped until a read no longer finds them (the daemon deleted them)."""

    def __init__(
        self,
        read: Callable[[int, int], Awaitable[list[OutboxRow]]],
        report: Callable[[Sequence[int]], None],
        *,
        floor: bool = True,
    ) -> None:
        self._read_rows = read
        self._report = report
        self._use_floor = floor
        self._ready = asyncio.Event()
        self._ready.set()  # rows may be waiting from before this process started
        self._floor = 0  # every row up to this seq is confirmed
        self._confirmed: set[int] = set()  # confirmed rows above the floor
        self._read: list[int] = []  # seqs of the last read, in order

    @property
    def ready(self) -> asyncio.Event:
        return self._ready

    async def batch(self, limit: int) -> list[OutboxRow]:
        wanted = limit + len(self._confirmed)
        rows = await self._read_rows(self._floor, wanted)
        self._read = [r.seq for r in rows]
        if self._confirmed:  # forget rows the daemon has deleted since
            present = set(self._read)
            top = self._read[-1] if len(rows) == wanted else None
            self._confirmed = {s for s in self._confirmed if s in present or (top is not None and s > top)}
        return [r for r in rows if r.seq not in self._confirmed][:limit]

    async def confirmed(self, seqs: Sequence[int]) -> None:
        self._confirmed.update(seqs)
        self._report(seqs)
        if not self._use_floor:
            return
        for seq in self._read:  # the floor moves over the confirmed prefix
            if seq not in self._confirmed:
                break
            self._floor = seq
            self._confirmed.discard(seq)


def _report_to_daemon(seqs: Sequence[int]) -> None:
    sys.stdout.buffer.write(json.dumps({"confirmed": list(seqs)}).encode() + b"\n")
    sys.stdout.buffer.flush()


async def _commands(reader: asyncio.StreamReader, outbox: OutboxReader, stopping: asyncio.Event) -> None:
    while line := await reader.readline():
        if line.strip() == b"q":
            stopping.set()
            return
        outbox.ready.set()
    os._exit(0)  # the daemon is gone: so are we (its rows wait for the next one)


async def _run() -> None:
    loop = asyncio.get_running_loop()
    # All of stdin through one reader: a buffered read of the first line could swallow a ``q``.
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    first = await reader.readline()
    if not first:
        return
    config = json.loads(first)
    stenod_logging.configure(fmt=config["log_format"], level=config["log_level"])
    stenod_logging.REDACTOR.add_secrets([config["amqp"].get("url")])
    amqp = AmqpSettings.model_validate(config["amqp"])
    stopping = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    journal = _outbox_of(config["journal"])
    link = BrokerLink(amqp, connection_name=f"{amqp.connection_name}-relay")
    outbox = OutboxReader(journal.read, _report_to_daemon, floor=journal.reads_above_floor)
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(_commands(reader, outbox, stopping), name="relay:commands")
            tg.create_task(journal.wake_on_commits(outbox.ready, stopping), name="relay:listen")
            tg.create_task(link.run(stopping), name="relay:link")
            tg.create_task(OutboxRelay(link, outbox, amqp).run(stopping), name="relay:publish")
    finally:
        await link.aclose()
        await journal.aclose()


class _Outbox(Protocol):
    reads_above_floor: bool

    async def read(self, after: int, limit: int) -> list[OutboxRow]: ...
    async def wake_on_commits(self, ready: asyncio.Event, stopping: asyncio.Event) -> None: ...
    async def aclose(self) -> None: ...


def _outbox_of(journal: dict[str, Any]) -> _Outbox:
    if journal.get("url"):
        from stenod.adapters.postgres.journal import PostgresOutbox  # psycopg only when it is used

        stenod_logging.REDACTOR.add_secrets([journal["url"]])
        return PostgresOutbox(journal["url"])
    return SqliteOutbox(Path(journal["path"]))


def main() -> None:
    # Ctrl-C in a terminal reaches the whole process group; the daemon decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(_run())


if __name__ == "__main__":
    main()
