"""Fixtures of the Responses API tests: in-process gateways on the deterministic ``fake`` backend
(wire shapes, storage, keys, billing and failures), the shared real-model gateway, and keys of a
second account made straight in a gateway's store."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import openai
import pytest

from gatewright.store.db import create_engine
from tests.support.accounts import accounts_on
from tests.support.app import AppGateway, app_gateway
from tests.support.procs import Gateway

UNLIMITED = {"default_requests_per_minute": 1_000_000, "default_tokens_per_minute": 100_000_000}


@pytest.fixture(scope="session")
def fake_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppGateway]:
    """The whole gateway in process on the shared fake catalog (tests/fixtures/catalogs/fake.toml)."""
    with app_gateway(tmp_path_factory.mktemp("responses-fake"), **UNLIMITED) as gw:
        yield gw


@pytest.fixture(scope="session")
def fake(fake_gateway: AppGateway) -> openai.OpenAI:
    return fake_gateway.openai()


@pytest.fixture(scope="session")
def bare_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppGateway]:
    """No platform (no keys, no store); stored responses kept in memory for 6 seconds (the test's
    first read must come within them, even on a busy machine)."""
    root = tmp_path_factory.mktemp("responses-bare")
    with app_gateway(root, platform=False, responses_retention_days=6 / 86400) as gw:
        yield gw


@pytest.fixture
def http(fake_gateway: AppGateway) -> httpx.Client:
    """Raw HTTP on the fake gateway (absolute URLs under ``fake_gateway.url`` or paths)."""
    return fake_gateway.http


def new_key(gw: Gateway | AppGateway, scopes: list[str], *, new_account: bool = False, **limits: int) -> str:
    """An API key on the gateway's store: of its first account, or of a new account with credits."""

    async def make() -> str:
        engine = create_engine(f"sqlite+aiosqlite:///{gw.data_dir / 'gatewright.db'}")
        try:
            async with accounts_on(engine) as accounts:
                account = await accounts.create_account("second", 20_000_000) if new_account else 1
                made = await accounts.create_key(account, "api", name="test", scopes=scopes, **limits)
            return made.key
        finally:
            await engine.dispose()

    return asyncio.run(make())
