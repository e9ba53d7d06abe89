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

__all__ = ["All", "Exec", "One", "Op", "Row", "Statement", "dumps", "loads", "run_sync"]

T = TypeVar("T")


class Row(Protocol):
    """A result row by column name: ``sqlite3.Row`` and psycopg's ``dict_row`` both are one."""

    def __getitem__(self, key: str) -> Any: ...
    def keys(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class All:
    """Every row of a query (a list of Row)."""

    sql: str
    args: Sequence[Any] = ()


@dataclass(frozen=True, slots=True)
class One:
    """The first row of a query, or None."""

    sql: str
    args: Sequence[Any] = ()


@dataclass(frozen=True, slots=True)
class Exec:
    """A statement that changes rows; its result is the number of rows it changed."""

    sql: str
    args: Sequence[Any] = ()


Statement = All | One | Exec
# The ``send`` type is the result of the last statement: list[Row], Row | None or int.
Op = Generator[Statement, Any, T]
OpFactory = Callable[..., Op[T]]

dumps = jsontext.dumps


def loads(text: str | None) -> Any:
    return None if text is None else jsontext.loads(text)


class SyncConnection(Protocol):
    """``sqlite3.Connection``, or a synchronous ``psycopg.Connection`` with dict rows."""

    def execute(self, sql: Any, args: Any, /) -> Any: ...


def run_sync(conn: SyncConnection | sqlite3.Connection, op: Op[T], *, dialect: Callable[[str], Any] = str) -> T:
    """Run an operation on a synchronous connection (the caller owns the transaction);
    ``dialect`` turns a shared statement into the connection's own."""
    try:
        statement = next(op)
        while True:
            cursor = conn.execute(dialect(statement.sql), tuple(statement.args))
            try:
                if isinstance(statement, All):
                    result: Any = cursor.fetchall()
                elif isinstance(statement, One):
                    result = cursor.fetchone()
                else:
                    result = cursor.rowcount
            finally:
                # No cursor may outlive this call: it belongs to the writer thread (CPython #118172).
                cursor.close()
            statement = op.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
