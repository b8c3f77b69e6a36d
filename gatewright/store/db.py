"""Engines and migrations.

SQLite runs in WAL mode with ``synchronous=NORMAL`` (durable across process crashes, the failure a
gateway sees) and takes its write lock at ``BEGIN`` so a transaction that reads a balance and then
writes it cannot interleave with another writer. PostgreSQL uses row locks (``FOR UPDATE``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

MIGRATIONS = Path(__file__).parent / "migrations"


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def _sqlite_file(url: str) -> str | None:
    path = url.split("///", 1)[-1]
    return path if path and path != ":memory:" else None


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _: Any) -> None:
        # Let SQLAlchemy own transactions so BEGIN IMMEDIATE below is ours.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin_immediate(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        path = _sqlite_file(url)
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})
        _sqlite_setup(engine.sync_engine)
        return engine
    return create_async_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def create_blocking_twin(engine: AsyncEngine) -> Engine | None:
    """A synchronous engine on the same SQLite file, for a writer that runs whole transactions in
    one worker thread: aiosqlite costs a thread round trip per statement, this one per transaction.
    ``None`` for other databases (their async drivers need no thread) and in-memory SQLite."""
    if not is_sqlite(engine):
        return None
    path = _sqlite_file(str(engine.url))
    if path is None:
        return None
    twin = sa_create_engine(f"sqlite:///{path}", connect_args={"timeout": 30, "check_same_thread": False})
    _sqlite_setup(twin)
    return twin


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url)
    return config


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision (Alembic, run on the engine's own connection)."""

    def run(connection: Connection) -> None:
        config = alembic_config(str(engine.url))
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

    async with engine.begin() as connection:
        await connection.run_sync(run)


def migrate_sync(url: str) -> None:
    engine = create_engine(url)
    asyncio.run(_migrate_and_dispose(engine))


async def _migrate_and_dispose(engine: AsyncEngine) -> None:
    try:
        await migrate(engine)
    finally:
        await engine.dispose()
