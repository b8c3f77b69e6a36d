"""/health/live and /health/ready in process (Starlette's TestClient runs the app's lifespan): what
makes readiness fail, and the refusal metrics (429 and 402 by reason)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from gatewright.api.health import LIFECYCLE
from gatewright.app import create_app
from gatewright.settings import Settings
from gatewright.wiring import bootstrap


@pytest.fixture
def settings(tmp_path: Path, fake_catalog: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        catalog=fake_catalog,
        starting_credits=200,  # enough for a few fake requests, not for a large max_tokens
        default_requests_per_minute=3,
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[tuple[TestClient, str]]:
    first = asyncio.run(bootstrap(settings))
    assert first is not None
    with TestClient(create_app(settings)) as client:
        yield client, first.api_key.key


def _refusals(client: TestClient) -> dict[tuple[str, str], float]:
    text = client.get("/metrics").text
    return {
        (s.labels["status"], s.labels["reason"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "gatewright_refusals_total"
    }


def _breakers(client: TestClient) -> dict[str, float]:
    text = client.get("/metrics").text
    return {
        s.labels["deployment"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "gatewright_deployment_breaker_state"
    }


def test_ready_and_what_makes_it_fail(client: tuple[TestClient, str]) -> None:
    http, _ = client
    assert http.get("/health/live").json() == {"status": "alive"}
    ready = http.get("/health/ready")
    assert ready.status_code == 200, ready.text
    assert {name: check["ok"] for name, check in ready.json()["checks"].items()} == {
        "draining": True,
        "store": True,
        "models_loaded": True,
        "default_model": True,
    }
    router = http.app.state.gateway.router  # type: ignore[attr-defined]
    default = router.catalog.find(router.catalog.default_model).deployments[0]
    breaker = router.breaker(default)
    for _ in range(breaker.threshold):
        breaker.record_failure(now=10**9)  # open until far in the future
    failing = http.get("/health/ready")
    assert failing.status_code == 503 and failing.json()["checks"]["default_model"]["ok"] is False
    assert _breakers(http)[default.name] == 2.0 and _breakers(http)["fake-slow"] == 0.0  # open; never used: closed
    breaker.record_success()
    LIFECYCLE.draining = True
    try:
        assert http.get("/health/ready").json()["checks"]["draining"]["ok"] is False
    finally:
        LIFECYCLE.draining = False
    assert http.get("/health/ready").status_code == 200


def test_schema_behind_is_not_ready(client: tuple[TestClient, str], settings: Settings) -> None:
    import sqlite3

    http, _ = client
    with sqlite3.connect(settings.data_dir / "gatewright.db") as db:
        db.execute("UPDATE alembic_version SET version_num = '0001'")
    ready = http.get("/health/ready")
    assert ready.status_code == 503 and "schema at 0001" in ready.json()["checks"]["store"]["detail"]


def test_refusals_are_counted_by_reason(client: tuple[TestClient, str]) -> None:
    http, key = client
    headers = {"authorization": f"Bearer {key}"}
    before = _refusals(http)
    body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    # 200 credits: a worst case of 4 prompt tokens x 2 + 64 output tokens x 4 is too much.
    poor = http.post("/v1/chat/completions", json={**body, "max_tokens": 64}, headers=headers)
    assert poor.status_code == 402
    answers = [http.post("/v1/chat/completions", json=body, headers=headers).status_code for _ in range(3)]
    assert answers == [200, 200, 429]  # 3 requests a minute: the 402 counted as one
    after = _refusals(http)
    delta = {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}
    assert delta == {("402", "insufficient_credits"): 1.0, ("429", "rate_limit_requests"): 1.0}
