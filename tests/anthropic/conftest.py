"""Fixtures for the Messages dialect: the official `anthropic` SDK on the shared real-model gateway,
and in-process gateways (tests/support/app.py) where a test needs the `fake` backend's failures,
tight limits or an upstream that reasons."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import anthropic
import pytest

from tests.support.app import AppGateway, app_gateway
from tests.support.procs import Gateway, free_port, wait_http

ROOT = Path(__file__).resolve().parents[2]


def blocks(content: Sequence[Any]) -> list[dict[str, Any]]:
    """Content blocks as plain data; the stream helper's blocks carry an extra ``parsed_output``."""
    return [block.model_dump(exclude={"parsed_output"}) for block in content]


def client_for(gw: Gateway | AppGateway) -> anthropic.Anthropic:
    return gw.anthropic()


@pytest.fixture(scope="session")
def messages(gateway: Gateway) -> anthropic.Anthropic:
    """The SDK on the shared gateway that runs the real embedded model."""
    return client_for(gateway)


@pytest.fixture(scope="session")
def fake_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppGateway]:
    """The whole gateway in process on the shared fake catalog (tests/fixtures/catalogs/fake.toml)."""
    with app_gateway(tmp_path_factory.mktemp("anthropic-fake")) as gw:
        yield gw


@pytest.fixture(scope="session")
def fake(fake_gateway: AppGateway) -> anthropic.Anthropic:
    return client_for(fake_gateway)


@pytest.fixture(scope="session")
def one_request_per_minute(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppGateway]:
    with app_gateway(tmp_path_factory.mktemp("anthropic-limited"), default_requests_per_minute=1) as gw:
        yield gw


@pytest.fixture(scope="session")
def reasoning_upstream() -> Iterator[str]:
    """The seeds' real GLM answers (reasoning included), replayed by an OpenAI-compatible server."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tests.support.replay_upstream", str(port)], cwd=ROOT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/last", 120, process)  # a bound for a loaded machine
        yield url
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="session")
def reasoning_gateway(tmp_path_factory: pytest.TempPathFactory, reasoning_upstream: str) -> Iterator[AppGateway]:
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
    with app_gateway(root, catalog=catalog) as gw:
        yield gw
