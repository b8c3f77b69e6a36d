"""Two gateway processes sharing one PostgreSQL store and one redis-server: one rate limit, one
balance, and key changes made on one replica seen by the other: an account's disabling at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gatewright.store.db import create_engine
from tests.platform.audit import assert_consistent, wait_settled
from tests.platform.conftest import UNLIMITED
from tests.platform.wire import assert_error, auth, chat_body
from tests.support.procs import Gateway, running_gateway
from tests.support.services import Postgres, Redis

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
START = 2_000_000


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory, fake_catalog: Path, postgres: Postgres, redis_server: Redis
) -> Iterator[tuple[Gateway, Gateway, str]]:
    url = postgres.create_database()
    env = {
        **UNLIMITED,
        "GATEWRIGHT_DATABASE_URL": url,
        "GATEWRIGHT_REDIS_URL": redis_server.url,
        "GATEWRIGHT_STARTING_CREDITS": str(START),
        "GATEWRIGHT_AUTH_CACHE_SECONDS": "2",  # long enough that "at once" is not the cache expiring
    }
    with running_gateway(tmp_path_factory.mktemp("replica-a"), catalog=fake_catalog, env=env) as first:
        assert first.api_key and first.management_key, first.log()
        with running_gateway(tmp_path_factory.mktemp("replica-b"), catalog=fake_catalog, env=env) as second:
            second.api_key, second.management_key = first.api_key, first.management_key  # one store
            second.operator_key = first.operator_key
            yield first, second, url


async def test_replicas_share_one_rate_limit_and_one_balance(replicas: tuple[Gateway, Gateway, str]) -> None:
    first, second, url = replicas
    async with httpx.AsyncClient(timeout=60) as http:
        made = await http.post(
            f"{first.url}/v1/keys",
            json={"rate_limit": {"requests_per_minute": 10}},
            headers=auth(first.management_key),
        )
        key = made.json()["data"]["key"]
        started = time.monotonic()
        responses = await asyncio.gather(
            *(
                http.post(f"{(first, second)[i % 2].url}/v1/chat/completions", json=chat_body(), headers=auth(key))
                for i in range(16)
            )
        )
        elapsed = time.monotonic() - started
    admitted = [r for r in responses if r.status_code == 200]
    # Ten a minute for the key, not ten per replica (plus one per 6 s the burst took, refilled).
    assert 10 <= len(admitted) <= 10 + int(elapsed / 6)
    assert len(admitted) + sum(r.status_code == 429 for r in responses) == 16
    assert {r.url.port for r in admitted} == {first.port, second.port}
    if elapsed < 6:  # no request refilled during the burst: exactly the bucket, counted down once
        remaining = sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in admitted)
        assert remaining == list(range(10))
    for refused in (r for r in responses if r.status_code == 429):
        assert_error(refused, 429, "rate_limit_requests")
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["x-ratelimit-limit-requests"] == "10"
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"

    engine = create_engine(url)
    try:
        ok_ids = {r.headers["x-request-id"] for r in responses if r.status_code == 200}
        books = await wait_settled(engine, account_id=1, requests=ok_ids)
    finally:
        await engine.dispose()
    assert_consistent(books, START)
    assert set(books.usage) == ok_ids
    assert sum(r.json()["meta"]["usage"]["credits_used"] for r in responses if r.status_code == 200) == books.charges


async def test_a_key_disabled_on_one_replica_stops_on_the_other(replicas: tuple[Gateway, Gateway, str]) -> None:
    first, second, _ = replicas
    async with httpx.AsyncClient(timeout=60) as http:
        made = await http.post(f"{first.url}/v1/keys", json={}, headers=auth(first.management_key))
        key, prefix = made.json()["data"]["key"], made.json()["data"]["prefix"]
        ok = await http.post(f"{second.url}/v1/chat/completions", json=chat_body(), headers=auth(key))
        assert ok.status_code == 200
        await http.patch(f"{first.url}/v1/keys/{prefix}", json={"disabled": True}, headers=auth(first.management_key))
        await asyncio.sleep(2.1)  # the other replica's cached lookup has expired
        refused = await http.post(f"{second.url}/v1/chat/completions", json=chat_body(), headers=auth(key))
        assert_error(refused, 403, "key_disabled")


async def test_disabling_an_account_on_one_replica_stops_it_on_the_other(
    replicas: tuple[Gateway, Gateway, str],
) -> None:
    """B has the keys cached when A disables their account: B's next model call is refused at once
    (the ledger reads the flag), so are its billing reads and key listings (those routes read the key
    from the store, not the cache: 2 s here), and a stream already running on B finishes and is billed."""
    first, second, _ = replicas
    operator = auth(first.operator_key)
    async with httpx.AsyncClient(timeout=60) as http:
        team = (
            await http.post(f"{first.url}/v1/admin/accounts", json={"name": "t", "credits": START}, headers=operator)
        ).json()
        made = await http.post(f"{first.url}/v1/keys", json={}, headers=auth(team["management_key"]))
        key, manager = made.json()["data"]["key"], auth(team["management_key"])
        assert (await http.get(f"{second.url}/v1/billing/balance", headers=auth(key))).status_code == 200  # cached on B
        assert (await http.get(f"{second.url}/v1/keys", headers=manager)).status_code == 200  # cached on B
        body = {**chat_body(model="slow", max_tokens=30), "stream": True}
        async with http.stream("POST", f"{second.url}/v1/chat/completions", json=body, headers=auth(key)) as running:
            assert running.status_code == 200
            lines = running.aiter_lines()
            await anext(lines)  # under way before the account is disabled
            changed = await http.patch(
                f"{first.url}/v1/admin/accounts/{team['id']}", json={"disabled": True}, headers=operator
            )
            assert changed.json()["disabled"] is True
            refused = await http.post(f"{second.url}/v1/chat/completions", json=chat_body(), headers=auth(key))
            assert_error(refused, 403, "account_disabled")
            # No waiting for B's cache: its reads of the key come from the store.
            assert_error(await http.get(f"{second.url}/v1/billing/balance", headers=auth(key)), 403, "account_disabled")
            assert_error(await http.get(f"{second.url}/v1/keys", headers=manager), 403, "account_disabled")
            rest = [line async for line in lines]
        assert "data: [DONE]" in rest  # the stream that was running finished
        listed = (await http.get(f"{first.url}/v1/admin/accounts/{team['id']}", headers=operator)).json()
        assert listed["spent"] > 0 and listed["reserved"] == 0  # the finished stream was billed
