"""Reading a daemon's journal from a test, whichever backend the test gave it: the
PostgreSQL database in ``$STENOD_JOURNAL__URL`` when set, else ``journal.db`` in its
state directory. Statements use ``?`` placeholders, as the journal's own do."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import psycopg


def rows(state_dir: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    url = os.environ.get("STENOD_JOURNAL__URL") if os.environ.get("STENOD_JOURNAL__BACKEND") == "postgresql" else None
    if url:
        with psycopg.connect(url, autocommit=True) as conn:
            return [tuple(r) for r in conn.execute(sql.replace("?", "%s").encode(), args).fetchall()]
    with sqlite3.connect(state_dir / "journal.db") as conn:
        return [tuple(r) for r in conn.execute(sql, args).fetchall()]
