"""The journal contract suite runs every test on both journal adapters."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from stenod.adapters.postgres.journal import PostgresJournal
from stenod.adapters.sqlite.journal import SqliteJournal
from stenod.journal import Journal
from support.postgres import fresh_database

OpenJournal = Callable[..., Awaitable[Journal]]


@pytest.fixture(params=["sqlite", "postgresql"])
async def open_journal(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OpenJournal]:
    """Opens journals on one store (a file, or a database of this test's own); every
    journal opened on it is closed at the end. Opening twice gives two handles on the
    same store (two instances, on PostgreSQL)."""
    opened: list[Journal] = []
    with fresh_database() if request.param == "postgresql" else contextlib.nullcontext() as url:

        async def open_(**kwargs: Any) -> Journal:
            if url is not None:
                journal: Journal = await PostgresJournal.open(url, reconnect_seconds=5.0, **kwargs)
            else:
                journal = SqliteJournal.open(tmp_path / "journal.db", **kwargs)
            opened.append(journal)
            return journal

        try:
            yield open_
        finally:
            for journal in opened:
                await journal.aclose()


@pytest.fixture
async def journal(open_journal: OpenJournal) -> Journal:
    return await open_journal(outbox=True)
