"""Fixtures of the platform tests: real PostgreSQL and Redis servers, stores on both databases,
and real gateway processes serving the deterministic ``fake`` backend (billing is what is under
test there, not generation)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gatewright.core.accounts import Accounts
from gatewright.core.keys import Authenticator
from gatewright.store.db import create_engine, migrate
from gatewright.store.keys import SqlKeyStore
from tests.support.accounts import accounts_on
from tests.support.app import FAKE_CATALOG, AppGateway, app_gateway
from tests.support.procs import Gateway
from tests.support.services import Postgres, Redis, ServiceUnavailable, in_ci, running_postgres, running_redis

T = TypeVar("T")

# Fake-model prices chosen so every credit amount is a whole number: 2 credits per prompt token,
# 1 per cached prompt token, 4 per output token (1 USD = 2,000,000 credits).
PRICES = {"input": 1.0, "cached_input": 0.5, "output": 2.0}
IN_CREDITS, OUT_CREDITS = 2, 4

# The fake models and their prices are in tests/fixtures/catalogs/fake.toml ("fake", "fake-slow", …).

# Generous per-key defaults so only the tests about rate limits ever meet one.
UNLIMITED = {"GATEWRIGHT_DEFAULT_REQUESTS_PER_MINUTE": "1000000", "GATEWRIGHT_DEFAULT_TOKENS_PER_MINUTE": "100000000"}
UNLIMITED_SETTINGS = {"default_requests_per_minute": 1_000_000, "default_tokens_per_minute": 100_000_000}


def worst_case(prompt_tokens: int, max_tokens: int) -> int:
    return prompt_tokens * IN_CREDITS + max_tokens * OUT_CREDITS


def fake_prompt_tokens(*texts: str) -> int:
    # The fake backend counts one token per word plus 3 per message.
    return sum(len(text.split()) + 3 for text in texts)


def _enter(stack: ExitStack, manager: AbstractContextManager[T], what: str) -> T:
    try:
        return stack.enter_context(manager)
    except ServiceUnavailable as error:
        message = f"{what} is not available here, so its tests cannot run: {error}"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    with ExitStack() as stack:
        yield _enter(stack, running_postgres(), "PostgreSQL")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Redis]:
    with ExitStack() as stack:
        yield _enter(stack, running_redis(), "redis-server")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store: a SQLite file, or a new database on the test PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    server: Postgres = request.getfixturevalue("postgres")
    return server.create_database()


@pytest.fixture
async def engine(store_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(store_url)
    await migrate(engine)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def accounts(engine: AsyncEngine) -> AsyncIterator[Accounts]:
    async with accounts_on(engine, Authenticator(SqlKeyStore(engine), ttl=60.0)) as made:
        yield made


@pytest.fixture(scope="session")
def fake_catalog() -> Path:
    return FAKE_CATALOG


@pytest.fixture(scope="session")
def platform_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppGateway]:
    """The whole gateway in process with the platform on, a SQLite store, the fake models and 1 USD
    of starting credits."""
    data_dir = tmp_path_factory.mktemp("platform-gateway")
    with app_gateway(data_dir, starting_credits=2_000_000, **UNLIMITED_SETTINGS) as gw:
        yield gw


def sqlite_url(gateway: Gateway | AppGateway) -> str:
    return f"sqlite+aiosqlite:///{gateway.data_dir / 'gatewright.db'}"


@pytest.fixture
async def http(platform_gateway: AppGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with platform_gateway.async_http() as client:
        yield client


@pytest.fixture
async def store(platform_gateway: AppGateway) -> AsyncIterator[AsyncEngine]:
    """The gateway's own SQLite store, opened beside it (WAL: readers and writers coexist)."""
    engine = create_engine(sqlite_url(platform_gateway))
    try:
        yield engine
    finally:
        await engine.dispose()
