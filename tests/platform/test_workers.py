"""`gatewright serve --workers 2`: two processes on one port share one SQLite store, and the money
stays exact across them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gatewright.core.keys import key_prefix
from gatewright.store.db import create_engine
from tests.platform.audit import assert_consistent, wait_settled
from tests.platform.conftest import UNLIMITED, sqlite_url
from tests.support.procs import Gateway, running_gateway

START = 2_000_000


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory, fake_catalog: Path) -> Iterator[Gateway]:
    env = {**UNLIMITED, "GATEWRIGHT_STARTING_CREDITS": str(START)}
    with running_gateway(
        tmp_path_factory.mktemp("workers"), catalog=fake_catalog, env=env, args=["--workers", "2"]
    ) as gw:
        assert gw.api_key, gw.log()
        yield gw


async def test_two_workers_bill_exactly_once(two_workers: Gateway) -> None:
    headers = {"authorization": f"Bearer {two_workers.api_key}"}
    body = {"model": "fake", "messages": [{"role": "user", "content": "one two three four"}], "max_tokens": 8}
    limits = httpx.Limits(max_connections=32)  # many connections, so both processes serve some
    async with httpx.AsyncClient(base_url=two_workers.url, headers=headers, timeout=60, limits=limits) as client:
        answers = await asyncio.gather(*(client.post("/v1/chat/completions", json=body) for _ in range(120)))
        assert [a.status_code for a in answers] == [200] * 120
        told = sum(a.json()["meta"]["usage"]["credits_used"] for a in answers)
        first = (await client.get("/v1/key")).json()["data"]  # the key works wherever it lands
    engine: AsyncEngine = create_engine(sqlite_url(two_workers))
    try:
        result = await wait_settled(engine, account_id=1)
    finally:
        await engine.dispose()
    assert_consistent(result, START)
    assert START - result.balance == told
    assert two_workers.api_key is not None
    assert len(result.usage) == 120 and first["prefix"] == key_prefix(two_workers.api_key)
    pids = {
        line.split("[")[1].split("]")[0] for line in two_workers.log().splitlines() if "Started server process" in line
    }
    assert len(pids) == 2, "two worker processes served the port"
