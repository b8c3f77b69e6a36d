"""Engines and migrations.

SQLite runs in WAL mode with ``synchronous=NORMAL`` (durable across process crashes, the failure a
gateway sees) and takes its write lock at ``BEGIN`` so a transaction that reads a balance and then
writes it cannot interleave with another writer. PostgreSQL uses row locks (``FOR UPDATE``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger("gatewright.store")


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def _sqlite_file(url: str) -> str | None:
    path = url.split("///", 1)[-1]
    return path if path and path != ":memory:" else None


# How long a connection waits for another connection's write lock before SQLite says BUSY.
BUSY_TIMEOUT_S = 30


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _: Any) -> None:
        # Let SQLAlchemy own transactions so BEGIN IMMEDIATE below is ours.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin_immediate(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        path = _sqlite_file(url)
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})
        _sqlite_setup(engine.sync_engine)
        return engine
    return create_async_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def create_blocking_twin(engine: AsyncEngine, *, autocheckpoint: bool = True) -> Engine | None:
    """A synchronous engine on the same SQLite file, for a writer that runs whole transactions in
    one worker thread: aiosqlite costs a thread round trip per statement, this one per transaction.
    ``None`` for other databases (their async drivers need no thread) and in-memory SQLite.

    ``autocheckpoint=False``: its commits never checkpoint the WAL (pair it with a ``WalCheckpointer``)."""
    if not is_sqlite(engine):
        return None
    path = _sqlite_file(str(engine.url))
    if path is None:
        return None
    twin = sa_create_engine(f"sqlite:///{path}", connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False})
    _sqlite_setup(twin)
    if not autocheckpoint:

        @event.listens_for(twin, "connect")
        def _no_autocheckpoint(dbapi_connection: Any, _: Any) -> None:
            dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")

    return twin


class WalCheckpointer:
    """Checkpoints a SQLite file's write-ahead log from a thread of its own.

    By default the commit that takes the log past 1,000 pages copies them into the database and
    syncs it, inside a transaction somebody is waiting on: for the ledger that was 1 commit in 100
    taking ~18 ms instead of ~1 ms. Here a passive checkpoint copies the log beside the writers
    every ``interval`` without blocking them. Under steady writes a passive checkpoint never lets
    the log start over (new frames always arrive while it runs), so once the file passes
    ``restart_bytes`` a RESTART checkpoint, which holds writers back for the few frames left and
    one sync, rewinds it. (It waits for a gap between write transactions: SQLite's busy handler
    polls, so a writer that never pauses would starve it; the ledger pauses between commits.)"""

    def __init__(self, path: str, interval: float = 0.5, restart_bytes: int = 16 << 20) -> None:
        self.path, self.interval, self.restart_bytes = path, interval, restart_bytes
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wal-checkpoint", daemon=True)

    @classmethod
    def for_engine(cls, engine: AsyncEngine) -> WalCheckpointer | None:
        path = _sqlite_file(str(engine.url)) if is_sqlite(engine) else None
        return cls(path) if path is not None else None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        # A short busy timeout: a RESTART that finds no gap gives up and tries again next round.
        conn = sqlite3.connect(self.path, timeout=1, isolation_level=None)
        wal = Path(f"{self.path}-wal")
        try:
            while not self._stop.wait(self.interval):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    if wal.exists() and wal.stat().st_size > self.restart_bytes:
                        conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
                except sqlite3.Error as error:  # a busy or locked file: the next round catches up
                    log.warning("WAL checkpoint of %s failed: %s", self.path, error)
        finally:
            conn.close()


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url)
    return config


# Any constant both replicas agree on: the key of PostgreSQL's advisory lock around migrations.
MIGRATION_LOCK_KEY = 0x6761_7465_7772  # "gatewr"


@functools.cache
def head_revisions() -> frozenset[str]:
    """The revisions this code's migrations end at."""
    return frozenset(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads())


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision (Alembic, run on the engine's own connection).

    Replicas starting together must not both migrate: on PostgreSQL the migration's transaction
    first takes an advisory lock (the second replica waits, then finds the schema current); on
    SQLite a lock file beside the database is held from before the first connection (switching
    a new file to WAL mode does not wait for a busy lock the way transactions do)."""

    def run(connection: Connection) -> None:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        config = alembic_config(str(engine.url))
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

    path = _sqlite_file(str(engine.url)) if is_sqlite(engine) else None
    async with _file_lock(path), engine.begin() as connection:
        await connection.run_sync(run)


@contextlib.asynccontextmanager
async def _file_lock(db_path: str | None) -> AsyncIterator[None]:
    if db_path is None:
        yield
        return
    lock = await asyncio.to_thread(_acquire, Path(f"{db_path}.migrate-lock"))
    try:
        yield
    finally:
        lock.close()  # closing the file releases the lock


def _acquire(path: Path) -> Any:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a")
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


async def schema_is_current(engine: AsyncEngine) -> tuple[bool, str]:
    """Whether the store answers and its schema is at this code's head revision (readiness)."""
    async with engine.connect() as connection:
        if not await connection.run_sync(lambda sync: inspect(sync).has_table("alembic_version")):
            return False, "no schema yet: run `gatewright db upgrade` (or start the gateway once)"
        rows = (await connection.execute(text("SELECT version_num FROM alembic_version"))).scalars().all()
    found = frozenset(rows)
    if found == head_revisions():
        return True, f"schema at {', '.join(sorted(found))}"
    have = ", ".join(sorted(found)) or "none"
    return False, f"schema at {have}, this version needs {', '.join(sorted(head_revisions()))}"


def migrate_sync(url: str) -> None:
    engine = create_engine(url)
    asyncio.run(_migrate_and_dispose(engine))


async def _migrate_and_dispose(engine: AsyncEngine) -> None:
    try:
        await migrate(engine)
    finally:
        await engine.dispose()
