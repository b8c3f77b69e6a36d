"""Fixtures for the Messages dialect: the official `anthropic` SDK on the shared real-model gateway,
and small gateways of our own where a test needs the `fake` backend's failures, tight limits or an
upstream that reasons."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import anthropic
import pytest

from tests.support.procs import Gateway, free_port, running_gateway, wait_http

ROOT = Path(__file__).resolve().parents[2]

# Fake models: echo the last user message word by word; fail as their options say.
FAKE_CATALOG = """
[[models]]
id = "echo"
context_window = 4096
max_output = 512
backend = "fake"
prices = { input = 1.0, output = 2.0 }
capabilities = { tools = true }

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
id = "overloaded"
context_window = 4096
max_output = 512
deployments = [{ backend = "fake", max_retries = 0, options = { fail_status = 529 } }]

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
options = { fail_after = 2 }
"""


def blocks(content: Sequence[Any]) -> list[dict[str, Any]]:
    """Content blocks as plain data; the stream helper's blocks carry an extra ``parsed_output``."""
    return [block.model_dump(exclude={"parsed_output"}) for block in content]


def client_for(gw: Gateway) -> anthropic.Anthropic:
    # Generous: real-model tests share two cores with everything else running on the machine.
    return anthropic.Anthropic(base_url=gw.url, api_key=gw.api_key, max_retries=0, timeout=600)


@pytest.fixture(scope="session")
def messages(gateway: Gateway) -> anthropic.Anthropic:
    """The SDK on the shared gateway that runs the real embedded model."""
    return client_for(gateway)


def _fake_gateway(root: Path, env: dict[str, str] | None = None) -> Iterator[Gateway]:
    catalog = root / "catalog.toml"
    catalog.write_text(FAKE_CATALOG)
    with running_gateway(root, catalog=catalog, env=env or {}) as gw:
        assert gw.api_key, gw.log()
        yield gw


@pytest.fixture(scope="session")
def fake_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    yield from _fake_gateway(tmp_path_factory.mktemp("anthropic-fake"))


@pytest.fixture(scope="session")
def fake(fake_gateway: Gateway) -> anthropic.Anthropic:
    return client_for(fake_gateway)


@pytest.fixture(scope="session")
def one_request_per_minute(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    yield from _fake_gateway(
        tmp_path_factory.mktemp("anthropic-limited"), {"GATEWRIGHT_DEFAULT_REQUESTS_PER_MINUTE": "1"}
    )


@pytest.fixture(scope="session")
def reasoning_upstream() -> Iterator[str]:
    """The seeds' real GLM answers (reasoning included), replayed by an OpenAI-compatible server."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tests.support.replay_upstream", str(port)], cwd=ROOT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/last", 30, process)
        yield url
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="session")
def reasoning_gateway(tmp_path_factory: pytest.TempPathFactory, reasoning_upstream: str) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("anthropic-reasoning")
    catalog = root / "catalog.toml"
    catalog.write_text(
        f"""
[[models]]
id = "glm-5-1"
context_window = 200000
max_output = 131072
backend = "openai"
base_url = "{reasoning_upstream}/v1"
upstream_model = "glm-5.1"
prices = {{ input = 1.0, cached_input = 0.25, output = 4.0 }}
capabilities = {{ reasoning = true, tools = true }}
"""
    )
    with running_gateway(root, catalog=catalog) as gw:
        yield gw
