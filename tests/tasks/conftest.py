"""Fixtures of the task-API tests: the official ``runware-sdk`` (REST transport) and raw HTTP on the
shared real-model gateway, a gateway of our own on the ``fake`` backend for faults and the wire's
corners, and a real webhook receiver on loopback."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.app import AppGateway, app_gateway
from tests.support.procs import Gateway
from tests.tasks.receiver import Receiver, running_receiver

WEBHOOK_SECRET = "test-webhook-secret-0123456789"
# The test receivers listen on loopback, which the gateway refuses unless the operator allows it.
RECEIVER_ALLOW = "127.0.0.1"
RECEIVER_ENV = {"GATEWRIGHT_OUTBOUND_ALLOW": RECEIVER_ALLOW}


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
    gw: Gateway | AppGateway, tasks: Any, key: str | None = "default", path: str = "/v1", timeout: float = 120
) -> httpx.Response:
    headers = {"authorization": f"Bearer {gw.api_key if key == 'default' else key}"} if key else {}
    return gw.http.post(path, json=tasks, headers=headers, timeout=timeout)


# The real model on this 2-core machine is slow, and slower still while other suites run beside it.
REAL_MODEL_TIMEOUT = 900.0


@pytest.fixture(scope="session")
def fake_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppGateway]:
    """The whole gateway in process on the shared fake catalog, signing webhooks with a known secret."""
    root = tmp_path_factory.mktemp("tasks-fake")
    with app_gateway(root, webhook_secret=WEBHOOK_SECRET, outbound_allow=RECEIVER_ALLOW) as gw:
        yield gw


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as r:
        yield r
