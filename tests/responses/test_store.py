"""Stored responses in SQL (SQLite and PostgreSQL) and in memory: scoped by account, never read
after they expire, removed by the sweep."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gatewright.core.clock import utcnow
from gatewright.core.stored import MemoryResponseStore, ResponseStore
from gatewright.store.db import create_engine, migrate
from gatewright.store.responses import SqlResponseStore
from gatewright.store.tables import responses
from tests.support.accounts import accounts_on
from tests.support.services import Postgres, ServiceUnavailable, in_ci, running_postgres


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with ExitStack() as stack:
        try:
            yield stack.enter_context(running_postgres())
        except ServiceUnavailable as error:
            message = f"PostgreSQL is not available here, so its tests cannot run: {error}"
            if in_ci():
                pytest.fail(message)
            pytest.skip(message)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    else:
        url = request.getfixturevalue("postgres").create_database()
    engine = create_engine(url)
    await migrate(engine)
    try:
        yield engine
    finally:
        await engine.dispose()


async def _exercise(store: ResponseStore, first: int, second: int) -> None:
    now = utcnow()
    later = now + timedelta(days=30)
    await store.save(first, "resp_a", b'{"a": 1}', now, later)
    await store.save(first, "resp_old", b'{"old": 1}', now - timedelta(days=31), now - timedelta(seconds=1))
    await store.save(second, "resp_b", b'{"b": 1}', now, later)
    assert await store.load(first, "resp_a", now) == b'{"a": 1}'
    assert await store.load(second, "resp_a", now) is None  # another account's
    assert await store.load(first, "resp_old", now) is None  # expired, not yet swept
    assert await store.delete(second, "resp_a") is False
    assert await store.remove_expired(now) == 1
    assert await store.delete(first, "resp_a") is True
    assert await store.load(first, "resp_a", now) is None
    assert await store.delete(first, "resp_a") is False
    assert await store.load(second, "resp_b", now) == b'{"b": 1}'


async def test_sql_store(engine: AsyncEngine) -> None:
    async with accounts_on(engine) as accounts:
        first = await accounts.create_account("one", 0)
        second = await accounts.create_account("two", 0)
    await _exercise(SqlResponseStore(engine), first, second)
    async with engine.connect() as conn:
        left = (await conn.execute(select(responses.c.id, responses.c.account_id))).all()
    assert [tuple(row) for row in left] == [("resp_b", second)]


async def test_memory_store() -> None:
    await _exercise(MemoryResponseStore(), 1, 2)
