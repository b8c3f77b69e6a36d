"""600 concurrent chat requests against a small balance, through a real gateway process on SQLite
and on PostgreSQL; a fifth of the streaming clients hang up mid-stream. Afterwards the books must
balance to the credit: balance delta == ledger rows == usage records == what clients were told
(plus, for abandoned streams, what the store billed for the tokens they left behind)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gatewright.store.db import create_engine
from tests.platform.audit import assert_consistent, wait_settled
from tests.platform.conftest import IN_CREDITS, OUT_CREDITS, UNLIMITED
from tests.platform.wire import StreamResult, auth, chat_body, stream_chat
from tests.support.procs import Gateway, running_gateway
from tests.support.services import Postgres

REQUESTS = 600
START = 15_000  # roughly a quarter of the requests' worst cases: many are refused with 402


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def busy_gateway(request: pytest.FixtureRequest, tmp_path: Path, fake_catalog: Path) -> Iterator[tuple[Gateway, str]]:
    env = {**UNLIMITED, "GATEWRIGHT_STARTING_CREDITS": str(START)}
    if request.param == "postgres":
        server: Postgres = request.getfixturevalue("postgres")
        url = server.create_database()
        env["GATEWRIGHT_DATABASE_URL"] = url
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'gatewright.db'}"
    with running_gateway(tmp_path, catalog=fake_catalog, env=env) as gw:
        yield gw, url


async def _one(http: httpx.AsyncClient, key: str, i: int, rng: random.Random) -> tuple[str, Any]:
    kind = rng.choice(["plain", "stream", "stream", "leave"])
    # Streams that will be abandoned run long (40+ tokens at 100 ms), so they are cut mid-way.
    length = rng.randint(40, 60) if kind == "leave" else rng.randint(3, 10)
    words = " ".join(f"w{i}-{k}" for k in range(length))
    if kind == "leave":
        body = chat_body(words, model="fake-slower", max_tokens=64)
    else:
        body = chat_body(words, model="fake-slow", max_tokens=rng.choice([4, 8, 12]))
    if kind == "plain":
        return kind, await http.post("/v1/chat/completions", json=body, headers=auth(key))
    leave = rng.randint(2, 4) if kind == "leave" else None
    return kind, await stream_chat(http, key, {**body, "stream_options": {"include_usage": True}}, leave_after=leave)


async def test_concurrent_requests_keep_the_books(busy_gateway: tuple[Gateway, str]) -> None:
    gw, url = busy_gateway
    assert gw.api_key
    rng = random.Random(11)
    limits = httpx.Limits(max_connections=REQUESTS + 10, max_keepalive_connections=REQUESTS + 10)
    async with httpx.AsyncClient(base_url=gw.url, timeout=120, limits=limits) as http:
        outcomes = await asyncio.gather(*(_one(http, gw.api_key, i, rng) for i in range(REQUESTS)))
        balance_seen = (await http.get("/v1/billing/balance", headers=auth(gw.api_key))).json()

    told: dict[str, int] = {}  # request id → credits_used the client received
    left: set[str] = set()  # streams the client abandoned
    refused: set[str] = set()
    for kind, outcome in outcomes:
        if isinstance(outcome, httpx.Response):
            status, request_id = outcome.status_code, outcome.headers["x-request-id"]
            if status == 200:
                told[request_id] = outcome.json()["meta"]["usage"]["credits_used"]
        else:
            result: StreamResult = outcome
            status, request_id = result.status, result.request_id
            if status == 200 and kind == "leave" and not result.done:
                left.add(request_id)
            elif status == 200:
                assert result.done and result.credits_used is not None
                told[request_id] = result.credits_used
        if status == 402:
            refused.add(request_id)
        assert status in (200, 402), (status, outcome)
    assert told and refused and left, (len(told), len(refused), len(left))

    engine = create_engine(url)
    try:
        books = await wait_settled(engine, account_id=1, within=60, requests=left | set(told))
    finally:
        await engine.dispose()
    assert_consistent(books, START)
    assert balance_seen["balance"] >= 0
    assert set(books.usage) == set(told) | left, "every admitted request, and only those, has one record"
    assert not refused & set(books.holds), "a refused request left a hold"
    for request_id, credits in told.items():
        record = books.usage[request_id]
        assert record.status == "ok" and record.credits == credits
    for request_id in left:
        record = books.usage[request_id]
        assert record.status in ("aborted", "ok")  # "ok" when it finished before the hang-up was seen
        assert record.credits == record.input_tokens * IN_CREDITS + record.output_tokens * OUT_CREDITS
    billed_to_leavers = sum(books.usage[r].credits for r in left)
    assert START - books.balance == sum(told.values()) + billed_to_leavers == books.usage_credits
