"""SQLAlchemy statements run straight on the sqlite3 driver, for the ledger's group commit.

Per statement SQLAlchemy spends more CPU on parameters and result rows than SQLite spends on the
statement; with billing on that was the largest single cost of a request. Statements are still
built with SQLAlchemy (one source of truth for table and column names) and compiled once; values
cross the boundary through the column types' own processors, so rows written here read back
exactly like rows written through SQLAlchemy.
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
_DATETIME = DateTime(timezone=True).dialect_impl(_NAMED)
_to_text = _DATETIME.bind_processor(_NAMED)
_from_text = _DATETIME.result_processor(_NAMED, None)
_compiled: dict[tuple[Executable, tuple[str, ...]], str] = {}


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
        cursor.executemany(sql_of(statement, keys), params)
    finally:
        cursor.close()


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
