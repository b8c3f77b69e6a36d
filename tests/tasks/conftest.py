"""Fixtures of the task-API tests: the official ``runware-sdk`` (REST transport) and raw HTTP on the
shared real-model gateway, a gateway of our own on the ``fake`` backend for faults and the wire's
corners, and a real webhook receiver on loopback."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.procs import Gateway, running_gateway
from tests.tasks.receiver import Receiver, running_receiver

# Fake models echo the last user message word by word (one token per word).
FAKE_CATALOG = """
default_model = "echo"

[[models]]
id = "echo"
aliases = ["fake:echo@1"]
context_window = 4096
max_output = 256
backend = "fake"
prices = { input = 1.0, output = 2.0 }
capabilities = { tools = true }

[[models]]
id = "slow"
context_window = 4096
max_output = 256
backend = "fake"
prices = { input = 1.0, output = 2.0 }
options = { delay = 0.2 }

[[models]]
id = "pricey"
context_window = 4096
max_output = 256
backend = "fake"
# 1 USD per output token: 256 of them are more than the 10 USD a new account starts with.
prices = { input = 1.0, output = 1000000.0 }

[[models]]
id = "broken"
context_window = 4096
max_output = 256
deployments = [{ backend = "fake", max_retries = 0, options = { fail_status = 500 } }]

[[models]]
id = "dies-midway"
context_window = 4096
max_output = 256
backend = "fake"
options = { fail_after = 2 }
"""

WEBHOOK_SECRET = "test-webhook-secret-0123456789"
# The test receivers listen on loopback, which the gateway refuses unless the operator allows it.
RECEIVER_ENV = {"GATEWRIGHT_OUTBOUND_ALLOW": "127.0.0.1"}


def new_uuid() -> str:
    return str(uuid.uuid4())


def text_task(**fields: Any) -> dict[str, Any]:
    task: dict[str, Any] = {
        "taskType": "textInference",
        "taskUUID": new_uuid(),
        "model": "echo",
        "messages": [{"role": "user", "content": "one two three"}],
    }
    task.update(fields)
    return task


def post(
    gw: Gateway, tasks: Any, key: str | None = "default", path: str = "/v1", timeout: float = 120
) -> httpx.Response:
    headers = {"authorization": f"Bearer {gw.api_key if key == 'default' else key}"} if key else {}
    return httpx.post(f"{gw.url}{path}", json=tasks, headers=headers, timeout=timeout)


# The real model on this 2-core machine is slow, and slower still while other suites run beside it.
REAL_MODEL_TIMEOUT = 900.0


@pytest.fixture(scope="session")
def fake_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root: Path = tmp_path_factory.mktemp("tasks-fake")
    catalog = root / "catalog.toml"
    catalog.write_text(FAKE_CATALOG)
    with running_gateway(
        root, catalog=catalog, env={"GATEWRIGHT_WEBHOOK_SECRET": WEBHOOK_SECRET, **RECEIVER_ENV}
    ) as gw:
        assert gw.api_key, gw.log()
        yield gw


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as r:
        yield r
