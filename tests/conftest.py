"""Shared fixtures. The main gateway is a real `gatewright serve` process on loopback running the
real embedded model with a fresh SQLite store; tests drive it over HTTP with the official SDKs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.support.procs import Gateway, running_gateway

MODEL = "qwen2.5-coder-0.5b-instruct"

# Session fixtures more than one directory uses: the real llama_cpp.server upstream and its gateway.
pytest_plugins = ("tests.support.llama_server",)


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with running_gateway(tmp_path_factory.mktemp("gateway")) as gw:
        assert gw.api_key and gw.management_key, gw.log()
        yield gw


@pytest.fixture(scope="session")
def client(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.api_key, max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def aclient(gateway: Gateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.api_key, max_retries=0, timeout=120)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Keep the expensive real-model tests together so one gateway process serves them all.
    items.sort(key=lambda item: 0 if "gateway" in getattr(item, "fixturenames", ()) else 1)


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
