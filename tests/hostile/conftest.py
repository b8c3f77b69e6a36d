"""An in-process gateway (ASGI, no sockets) on the deterministic ``fake`` backend with the platform
on: hostile-input tests send thousands of requests, so they skip the network and the real model.
The models are named as in the OpenAPI document's examples (``local``), so those examples run."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from gatewright.app import create_app
from gatewright.settings import Settings
from gatewright.wiring import bootstrap

CATALOG = """
default_model = "local"

[[models]]
id = "local"
context_window = 4096
max_output = 64
backend = "fake"
prices = { input = 1.0, output = 2.0 }
capabilities = { tools = true, json_schema = true, reasoning = true }
"""


@dataclass
class InProcess:
    client: TestClient
    api_key: str
    management_key: str
    data_dir: Path
    operator_key: str = ""

    def headers(self, security: list[str] | tuple[str, ...] = ("apiKey",)) -> dict[str, str]:
        """The credentials an operation's security names: a management key where it asks for one."""
        key = self.management_key if "managementKey" in security else self.api_key
        key = self.operator_key if "operatorKey" in security else key
        return {"authorization": f"Bearer {key}"}


def settings_for(data_dir: Path, extra_catalog: str = "", **overrides: object) -> Settings:
    (data_dir / "catalog.toml").write_text(CATALOG + extra_catalog)
    values: dict[str, object] = {
        "data_dir": data_dir,
        "catalog": data_dir / "catalog.toml",
        "default_requests_per_minute": 10**9,
        "default_tokens_per_minute": 10**9,
        "starting_credits": 10**12,
        "webhook_secret": "hostile-tests",
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


@contextmanager
def in_process(data_dir: Path, extra_catalog: str = "", **overrides: object) -> Iterator[InProcess]:
    settings = settings_for(data_dir, extra_catalog, **overrides)
    first = asyncio.run(bootstrap(settings)) if settings.platform else None
    app = create_app(settings)
    # Server exceptions surface as exceptions here: a crash is a failure, never hidden as a 500.
    with TestClient(app, raise_server_exceptions=True) as client:
        yield InProcess(
            client,
            first.api_key.key if first else "",
            first.management_key.key if first else "",
            data_dir,
            first.operator_key if first else "",
        )


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcess]:
    with in_process(tmp_path_factory.mktemp("hostile")) as running:
        yield running
