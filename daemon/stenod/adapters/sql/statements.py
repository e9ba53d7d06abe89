"""Statements as values, and operations as generators of them.

An operation (``Op``) yields the statements it needs and receives each one's result, so
the journal's logic is written once and run by two drivers: the SQLite writer thread runs
it synchronously with ``sqlite3`` (:func:`run_sync`), the PostgreSQL adapter awaits each
statement on a ``psycopg`` connection. Neither driver knows what the operation does; the
operation knows nothing of the driver. Statements are written in the dialect both accept
(``?`` placeholders, which the PostgreSQL driver turns into ``%s``; upserts with
``ON CONFLICT``; ``IS NOT DISTINCT FROM``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from stenod import jsontext
from stenod.speakers import Diarization

__all__ = [
    "FOR_UPDATE",
    "SKIP_LOCKED",
    "All",
    "Count",
    "Exec",
    "Many",
    "One",
    "Op",
    "Row",
    "Statement",
    "chunks",
    "diarization_of_text",
    "diarization_text",
    "dumps",
    "loads",
    "marks",
    "run_sync",
    "sqlite_dialect",
]

T = TypeVar("T")


class Row(Protocol):
    """A result row by column name: ``sqlite3.Row`` and psycopg's ``dict_row`` both are one."""

    def __getitem__(self, key: str) -> Any: ...
    def keys(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class _Query:
    sql: str
    args: Sequence[Any] = ()


class All(_Query):
    """Every row of a query (a list of Row)."""

    __slots__ = ()


class One(_Query):
    """The first row of a query, or None."""

    __slots__ = ()


class Exec(_Query):
    """A statement that changes rows; its result is None (on PostgreSQL it is sent without
    waiting for the server's answer: an error surfaces at the next statement that reads)."""

    __slots__ = ()


class Count(_Query):
    """A statement that changes rows; its result is the number of rows it changed."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Many:
    """One statement run once for each row of ``rows`` (its result is None): on PostgreSQL
    they go to the server together, not one round trip each."""

    sql: str
    rows: Sequence[Sequence[Any]]


Statement = All | One | Exec | Count | Many
# The ``send`` type is the result of the last statement: list[Row], Row | None or int.
Op = Generator[Statement, Any, T]
OpFactory = Callable[..., Op[T]]

dumps = jsontext.dumps

# Appended to a SELECT whose rows the transaction must hold until it commits. PostgreSQL
# locks them (with SKIP_LOCKED, leaving out rows another transaction holds instead of
# waiting for them); SQLite has one writer at a time anyway, and its drivers drop both.
FOR_UPDATE = " FOR UPDATE"
SKIP_LOCKED = " FOR UPDATE SKIP LOCKED"


def sqlite_dialect(sql: str) -> str:
    """A shared statement as SQLite takes it."""
    return sql.replace(SKIP_LOCKED, "").replace(FOR_UPDATE, "")


def marks(values: Sequence[Any]) -> str:
    """``?, ?, ?`` for an ``IN (…)`` of these values."""
    return ", ".join("?" * len(values))


def chunks(values: Sequence[T], size: int = 500) -> list[tuple[T, ...]]:
    """Values in slices small enough for one statement's parameters (SQLite allows 32766)."""
    return [tuple(values[start : start + size]) for start in range(0, len(values), size)]


def loads(text: str | None) -> Any:
    return None if text is None else jsontext.loads(text)


class SyncConnection(Protocol):
    """``sqlite3.Connection``, or a synchronous ``psycopg.Connection`` with dict rows."""

    def execute(self, sql: Any, args: Any, /) -> Any: ...
    def cursor(self) -> Any: ...


def run_sync(conn: SyncConnection | sqlite3.Connection, op: Op[T], *, dialect: Callable[[str], Any] = str) -> T:
    """Run an operation on a synchronous connection (the caller owns the transaction);
    ``dialect`` turns a shared statement into the connection's own."""
    try:
        statement = next(op)
        while True:
            if isinstance(statement, Many):
                if statement.rows:
                    cursor = conn.cursor()
                    try:
                        cursor.executemany(dialect(statement.sql), [tuple(r) for r in statement.rows])
                    finally:
                        cursor.close()
                statement = op.send(None)
                continue
            cursor = conn.execute(dialect(statement.sql), tuple(statement.args))
            try:
                if isinstance(statement, All):
                    result: Any = cursor.fetchall()
                elif isinstance(statement, One):
                    result = cursor.fetchone()
                elif isinstance(statement, Count):
                    result = cursor.rowcount
                else:
                    result = None
            finally:
                # No cursor may outlive this call: it belongs to the writer thread (CPython #118172).
                cursor.close()
            statement = op.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


def diarization_text(asked: Diarization | None) -> str | None:
    """A job's diarization as its column holds it (NULL: nobody asked)."""
    return None if asked is None else dumps(asked.to_json())


def diarization_of_text(text: str | None) -> Diarization | None:
    return None if text is None else Diarization.from_json(jsontext.loads(text))
