"""SQLAlchemy statements run straight on the sqlite3 driver, for the ledger's group commit.

Per statement SQLAlchemy spends more CPU on parameters and result rows than SQLite spends on the
statement; with billing on that was the largest single cost of a request. Statements are still
built with SQLAlchemy (one source of truth for table and column names) and compiled once; values
cross the boundary through the column types' own processors, so rows written here read back
exactly like rows written through SQLAlchemy.

A batch's rows go into a table as multi-row INSERTs (up to ``ROWS_PER_INSERT`` rows a statement),
not one statement run per row: each statement run is a release and re-take of the GIL, which the
event loop holds most of the time, so a row-at-a-time batch of a few hundred settlements was a few
hundred thread switches (docs/benchmarks.md, "Request ids in time order, rows in one INSERT").
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Insert, bindparam
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect
from sqlalchemy.engine import Connection
from sqlalchemy.sql import Executable

_NAMED = sqlite_dialect(paramstyle="named")
_QMARK = sqlite_dialect(paramstyle="qmark")
# Rows a multi-row INSERT holds. A batch is split into statements of 64, 16, 4 and 1 rows, so
# each table has at most four SQL texts for sqlite3's statement cache; 64 rows of the widest table
# (usage records, 16 columns) bind 1,024 values, far below SQLite's limit of 32,766.
ROWS_PER_INSERT = (64, 16, 4, 1)
_DATETIME = DateTime(timezone=True).dialect_impl(_NAMED)
_to_text = _DATETIME.bind_processor(_NAMED)
_from_text = _DATETIME.result_processor(_NAMED, None)
_compiled: dict[tuple[Executable, tuple[str, ...]], str] = {}
_compiled_rows: dict[tuple[Executable, tuple[str, ...], int], str] = {}


def serves(conn: Connection) -> bool:
    """Whether ``conn`` is on the blocking sqlite3 driver (the ledger's own thread), not aiosqlite."""
    return conn.dialect.name == "sqlite" and conn.dialect.driver == "pysqlite"


def to_datetime(value: str | None) -> datetime | None:
    """A DateTime column's stored text as SQLAlchemy would return it."""
    return _from_text(value) if _from_text is not None and value is not None else value  # type: ignore[return-value]


def sql_of(statement: Executable, keys: tuple[str, ...] = ()) -> str:
    """The statement's SQL with ``:name`` parameters; an INSERT names only ``keys`` (ids are left
    to autoincrement)."""
    sql = _compiled.get((statement, keys))
    if sql is None:
        target = statement
        if isinstance(statement, Insert):
            target = statement.values({key: bindparam(key) for key in keys})
        sql = _compiled[(statement, keys)] = str(target.compile(dialect=_NAMED))  # type: ignore[attr-defined]
    return sql


def insert_sql(statement: Insert, keys: tuple[str, ...], rows: int) -> str:
    """``statement`` for ``rows`` rows of ``keys`` at once, with ``?`` parameters in row-major order."""
    sql = _compiled_rows.get((statement, keys, rows))
    if sql is None:
        values: list[dict[str, Any]] = [{key: bindparam(f"{key}_{row}") for key in keys} for row in range(rows)]
        compiled = statement.values(values).compile(dialect=_QMARK)
        # The values go in by position: the compiled order must be each row's keys in turn.
        assert compiled.positiontup == [f"{key}_{row}" for row in range(rows) for key in keys]
        sql = _compiled_rows[(statement, keys, rows)] = str(compiled)
    return sql


def fetch(conn: Connection, statement: Executable, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        return list(cursor.execute(sql_of(statement), params).fetchall())
    finally:
        cursor.close()


def execute_many(conn: Connection, statement: Executable, rows: Sequence[dict[str, Any]]) -> None:
    keys = tuple(rows[0])
    # Columns that may hold datetimes: the first row's datetimes and its NULLs.
    stamps = [key for key, value in rows[0].items() if value is None or isinstance(value, datetime)]
    params: Sequence[dict[str, Any]] = rows
    if stamps and _to_text is not None:
        # A batch's rows share their stamps (its one ``now``): each object is converted once
        # (by identity: equal instants in other zones would be written as they are).
        texts: dict[int, str] = {}
        params = [_stamped(row, stamps, texts) for row in rows]
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        if isinstance(statement, Insert) and len(params) > 1:
            _insert_rows(cursor, statement, keys, params)
        else:
            cursor.executemany(sql_of(statement, keys), params)
    finally:
        cursor.close()


def _insert_rows(cursor: Any, statement: Insert, keys: tuple[str, ...], rows: Sequence[dict[str, Any]]) -> None:
    start = 0
    for size in ROWS_PER_INSERT:
        while len(rows) - start >= size:
            part = rows[start : start + size]
            cursor.execute(insert_sql(statement, keys, size), [row[key] for row in part for key in keys])
            start += size


def _stamped(row: dict[str, Any], stamps: list[str], texts: dict[int, str]) -> dict[str, Any]:
    assert _to_text is not None
    row = dict(row)
    for key in stamps:
        value = row[key]
        if isinstance(value, datetime):
            text = texts.get(id(value))
            if text is None:
                text = texts[id(value)] = _to_text(value)
            row[key] = text
    return row
