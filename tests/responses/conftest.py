"""Fixtures of the Responses API tests: gateways of our own on the deterministic ``fake`` backend
(wire shapes, storage, keys, billing and failures), the shared real-model gateway, and keys of a
second account made straight in a gateway's store."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from gatewright.core.accounts import Accounts
from gatewright.store.db import create_engine
from tests.support.procs import Gateway, running_gateway

# Fake models echo the last user message word by word (one token per word).
FAKE_CATALOG = """
[[models]]
id = "echo"
aliases = ["echo-alias"]
context_window = 4096
max_output = 512
backend = "fake"
prices = { input = 1.0, output = 2.0 }
capabilities = { tools = true, json_schema = true }

[[models]]
id = "thinker"
context_window = 4096
max_output = 512
backend = "fake"
prices = { input = 1.0, output = 2.0 }
capabilities = { reasoning = true }
reasoning_tags = ["<think>", "</think>"]

[[models]]
id = "pricey"
context_window = 4096
max_output = 512
backend = "fake"
# 0.1 USD per output token: 512 of them are more than the 10 USD a new account starts with.
prices = { input = 1.0, output = 100000.0 }

[[models]]
id = "broken"
context_window = 4096
max_output = 512
deployments = [{ backend = "fake", max_retries = 0, options = { fail_status = 500 } }]

[[models]]
id = "dies-midway"
context_window = 4096
max_output = 512
backend = "fake"
prices = { input = 1.0, output = 2.0 }
options = { fail_after = 2 }
"""

UNLIMITED = {"GATEWRIGHT_DEFAULT_REQUESTS_PER_MINUTE": "1000000", "GATEWRIGHT_DEFAULT_TOKENS_PER_MINUTE": "100000000"}


def _gateway(root: Path, env: dict[str, str], args: list[str] | None = None) -> Iterator[Gateway]:
    catalog = root / "catalog.toml"
    catalog.write_text(FAKE_CATALOG)
    with running_gateway(root, catalog=catalog, env=env, args=args) as gw:
        yield gw


@pytest.fixture(scope="session")
def fake_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    yield from _gateway(tmp_path_factory.mktemp("responses-fake"), UNLIMITED)


@pytest.fixture(scope="session")
def fake(fake_gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{fake_gateway.url}/v1", api_key=fake_gateway.api_key, max_retries=0, timeout=60)


@pytest.fixture(scope="session")
def bare_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """No platform (no keys, no store); stored responses kept in memory for 2 seconds."""
    env = {"GATEWRIGHT_PLATFORM": "false", "GATEWRIGHT_RESPONSES_RETENTION_DAYS": str(2 / 86400)}
    yield from _gateway(tmp_path_factory.mktemp("responses-bare"), env)


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60) as client:
        yield client


def new_key(gw: Gateway, scopes: list[str], *, new_account: bool = False, **limits: int) -> str:
    """An API key on the gateway's store: of its first account, or of a new account with credits."""

    async def make() -> str:
        engine = create_engine(f"sqlite+aiosqlite:///{gw.data_dir / 'gatewright.db'}")
        try:
            accounts = Accounts(engine)
            account = await accounts.create_account("second", 20_000_000) if new_account else 1
            made = await accounts.create_key(account, "api", name="test", scopes=scopes, **limits)
            return made.key
        finally:
            await engine.dispose()

    return asyncio.run(make())
