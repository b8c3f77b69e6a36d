"""The SQLite ledger commits on the event loop's thread while the file's write lock is free, and
waits for a lock held elsewhere on its worker thread, never on the loop (``store.ledger``)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from gatewright.core.accounts import Accounts
from gatewright.core.ledger_rules import Reservation
from gatewright.core.platform import Principal, Settlement
from gatewright.core.types import Usage
from gatewright.store import ledger as ledger_store
from gatewright.store.ledger import SqlLedgerStore
from tests.platform.audit import assert_consistent, audit
from tests.platform.ledger_support import cost_of, new_principal


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


@pytest.fixture
def store_url(db_path: Path) -> str:
    """SQLite only (the conftest's ``engine`` and ``accounts`` open it): its file lock is the subject."""
    return f"sqlite+aiosqlite:///{db_path}"


@pytest.fixture
async def store(engine: AsyncEngine) -> AsyncIterator[SqlLedgerStore]:
    made = SqlLedgerStore(engine, owner="test")
    made.start()
    try:
        yield made
    finally:
        await made.close()


class LockHolder:
    """Another connection (as another worker process would be) holding the file's write lock from
    a thread of its own, until ``release`` or ``hold_at_most`` seconds, whichever comes first: a
    ledger that waited for it on the event loop would hold the loop that long, not hang the test."""

    def __init__(self, path: Path, hold_at_most: float = 20.0) -> None:
        self.path, self.hold_at_most = path, hold_at_most
        self.locked, self._release = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._hold, daemon=True)

    def _hold(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            self.locked.set()
            self._release.wait(self.hold_at_most)
            conn.execute("COMMIT")
        finally:
            conn.close()

    def __enter__(self) -> LockHolder:
        self._thread.start()
        assert self.locked.wait(30)
        return self

    def release(self) -> None:
        self._release.set()
        self._thread.join(30)

    def __exit__(self, *_: object) -> None:
        self.release()


def reservations(who: Principal, ids: list[str]) -> list[Reservation]:
    return [Reservation(who, 100, rid, "fake") for rid in ids]


async def opened(store: SqlLedgerStore, accounts: Accounts) -> None:
    """The store's first batch (another account's): it opens the connection, on the thread."""
    await store.apply(reservations(await new_principal(accounts, 1_000), ["first"]), retry=False)
    assert (store.commits, store.commits_on_loop) == (1, 0)


async def test_batches_commit_on_the_loop_while_the_file_is_free(
    accounts: Accounts, store: SqlLedgerStore, engine: AsyncEngine
) -> None:
    await opened(store, accounts)
    who = await new_principal(accounts, 10_000)
    held = await store.apply(reservations(who, ["a", "b"]), retry=False)
    charged = await store.apply([Settlement(h, Usage(output_tokens=1), cost_of(30), "ok", "fake") for h in held], False)
    assert charged == [30, 30]
    assert (store.commits, store.commits_on_loop) == (3, 2)
    result = await audit(engine, who.account_id)
    assert_consistent(result, 10_000)
    assert result.charge_rows == {"a": 30, "b": 30}


async def test_a_lock_held_elsewhere_is_waited_for_off_the_loop(
    accounts: Accounts, store: SqlLedgerStore, engine: AsyncEngine, db_path: Path
) -> None:
    await opened(store, accounts)
    who = await new_principal(accounts, 10_000)
    with LockHolder(db_path) as holder:
        waiting = asyncio.create_task(store.apply(reservations(who, ["a"]), retry=False))
        turns = 0
        for _ in range(20):  # the loop keeps turning while the batch waits for the lock
            await asyncio.sleep(0.01)
            turns += 1
        assert turns == 20 and not waiting.done()
        behind = asyncio.create_task(store.apply(reservations(who, ["b"]), retry=False))
        await asyncio.sleep(0.05)
        assert not behind.done()  # queued behind it on the thread, not run beside it on the loop
        holder.release()
        (hold_a,), (hold_b,) = await asyncio.gather(waiting, behind)
    assert (store.commits, store.commits_on_loop) == (3, 0)
    # Once the lock is free again, batches are back on the loop.
    charged = await store.apply(
        [Settlement(h, Usage(output_tokens=1), cost_of(40), "ok", "fake") for h in (hold_a, hold_b)], False
    )
    assert charged == [40, 40] and (store.commits, store.commits_on_loop) == (4, 1)
    result = await audit(engine, who.account_id)
    assert_consistent(result, 10_000)
    assert result.charge_rows == {"a": 40, "b": 40}


async def test_a_lock_lost_in_the_middle_of_a_batch_is_retried_on_the_thread(
    accounts: Accounts, store: SqlLedgerStore, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite can answer BUSY after BEGIN IMMEDIATE too (a WAL reset by another connection's
    # checkpoint): the batch's transaction is rolled back whole and written once on the thread.
    await opened(store, accounts)
    who = await new_principal(accounts, 10_000)
    real = ledger_store._execute
    failures = [1]

    def busy_once(conn: Connection, statement: Any, rows: list[dict[str, Any]]) -> None:
        if failures[0] and getattr(getattr(statement, "table", None), "name", None) == "holds":
            failures[0] -= 1
            error = sqlite3.OperationalError("database is locked")
            error.sqlite_errorcode = 5  # type: ignore[attr-defined]  # as the driver sets it
            raise error
        real(conn, statement, rows)

    monkeypatch.setattr(ledger_store, "_execute", busy_once)
    (held,) = await store.apply(reservations(who, ["a"]), retry=False)
    assert failures == [0] and (store.commits, store.commits_on_loop) == (2, 0)
    assert await store.apply([Settlement(held, Usage(), cost_of(25), "ok", "fake")], False) == [25]
    result = await audit(engine, who.account_id)
    assert_consistent(result, 10_000)
    assert result.charge_rows == {"a": 25}


async def test_other_errors_on_the_loop_are_the_callers(
    accounts: Accounts, store: SqlLedgerStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only a lock held elsewhere sends a batch to the thread; anything else fails the batch as it
    # did (the ledger writer retries it), and nothing of it was written.
    await opened(store, accounts)
    who = await new_principal(accounts, 10_000)

    def broken(conn: Connection, statement: Any, rows: list[dict[str, Any]]) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(ledger_store, "_execute", broken)
    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        await store.apply(reservations(who, ["a"]), retry=False)
    assert store.commits == 1
    monkeypatch.undo()
    assert (await accounts.account(who.account_id)).reserved == 0
