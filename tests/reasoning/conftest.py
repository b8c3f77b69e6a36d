"""A gateway whose upstream replays the seeds' real GLM responses over loopback."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.support.app import AppGateway, app_gateway
from tests.support.procs import free_port, wait_http

PRICES = {"input": 1.0, "cached_input": 0.25, "output": 4.0}


def catalog_text(upstream: str) -> str:
    def model(name: str, upstream_model: str, extra: str = "") -> str:
        return f"""
[[models]]
id = "{name}"
context_window = 200000
max_output = 131072
backend = "openai"
base_url = "{upstream}/v1"
upstream_model = "{upstream_model}"
prices = {{ input = {PRICES["input"]}, cached_input = {PRICES["cached_input"]}, output = {PRICES["output"]} }}
capabilities = {{ reasoning = true, tools = true }}
{extra}
"""

    return "".join(
        [
            model("glm-5-1", "glm-5.1"),
            model("glm-5", "glm-5"),
            model("glm-5-1-reasoning-field", "glm-5.1-reasoning-field"),
            model("glm-5-1-tags", "glm-5.1-think-tags", 'reasoning_tags = ["<think>", "</think>"]'),
            model("glm-5-1-tags-no-usage", "glm-5.1-think-tags-no-usage", 'reasoning_tags = ["<think>", "</think>"]'),
        ]
    )


@pytest.fixture(scope="session")
def replay_upstream() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.replay_upstream", str(port)],
        cwd=Path(__file__).resolve().parents[2],
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/last", 120, process)  # a bound for a loaded machine
        yield url
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="session")
def glm_gateway(tmp_path_factory: pytest.TempPathFactory, replay_upstream: str) -> Iterator[AppGateway]:
    """The gateway in process; the upstream it relays to is a real process on loopback."""
    data_dir = tmp_path_factory.mktemp("glm-gateway")
    catalog = data_dir / "catalog.toml"
    catalog.write_text(catalog_text(replay_upstream))
    with app_gateway(data_dir, catalog=catalog) as gw:
        yield gw


@pytest.fixture(scope="session")
def glm(glm_gateway: AppGateway) -> openai.OpenAI:
    return glm_gateway.openai()
