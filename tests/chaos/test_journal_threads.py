"""Found by the chaos run (once, a daemon exiting 1 right after a restart): a journal write
failed with ``sqlite3.InterfaceError: bad parameter or other API misuse``. The journal's
operations returned their cursors to the event loop's thread, which released them there,
touching statements the writer thread was using (the CPython issue class #118172). No
sqlite3 object may leave the writer thread."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from stenod.adapters.sqlite.journal import SqliteJournal


async def test_a_cursor_an_operation_returns_never_reaches_the_event_loop(tmp_path: Path) -> None:
    journal = SqliteJournal.open(tmp_path / "journal.db")
    seen: list[sqlite3.Cursor] = []

    def op(conn: sqlite3.Connection) -> sqlite3.Cursor:
        cursor = conn.execute("UPDATE jobs SET progress = 0.5 WHERE id = ?", ("none",))
        seen.append(cursor)
        return cursor

    try:
        result = await journal._writer.call(op)  # the port every journal operation goes through
        await journal.set_progress(["a", "b"], 0.5)
    finally:
        journal.close()
    assert result is None
    try:
        seen[0].execute("SELECT 1")
    except sqlite3.ProgrammingError as exc:  # closed in the writer thread, before the hand-over
        assert "closed" in str(exc)
    else:
        raise AssertionError("the cursor was handed over open")
