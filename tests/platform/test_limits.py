"""Per-key rate limits: the in-process token buckets and the same buckets in a real redis-server,
where several limiter instances (gateway replicas) share one limit."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as redis

from gatewright.core.errors import RateLimited
from gatewright.core.limits import Defaults, MemoryLimiter
from gatewright.core.platform import LimitState, Principal
from gatewright.store.redis_limits import RedisLimiter
from tests.support.procs import free_port
from tests.support.services import Redis

Limiter = MemoryLimiter | RedisLimiter


def _key(rpm: int | None = None, tpm: int | None = None, key_id: int = 1) -> Principal:
    return Principal(
        account_id=1,
        key_id=key_id,
        prefix="abcd1234",
        kind="api",
        scopes=frozenset(),
        requests_per_minute=rpm,
        tokens_per_minute=tpm,
    )


@pytest.fixture
async def clients(redis_server: Redis) -> AsyncIterator[list[Any]]:
    made = [redis.from_url(redis_server.url) for _ in range(2)]
    try:
        yield made
    finally:
        for client in made:
            await client.aclose()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def make_limiter(request: pytest.FixtureRequest) -> Any:
    """Builds limiters of one kind; Redis ones built by one factory share a namespace (one limit)."""
    if request.param == "memory":
        return lambda defaults: MemoryLimiter(defaults)
    connections: list[Any] = request.getfixturevalue("clients")
    namespace = f"test:{uuid.uuid4().hex[:8]}"
    made: list[RedisLimiter] = []

    def build(defaults: Defaults) -> RedisLimiter:
        limiter = RedisLimiter(connections[len(made) % len(connections)], defaults, namespace)
        made.append(limiter)
        return limiter

    return build


NO_DEFAULTS = Defaults(None, None)


async def test_requests_per_minute_refuses_with_retry_after_and_state(make_limiter: Any) -> None:
    limiter: Limiter = make_limiter(NO_DEFAULTS)
    key = _key(rpm=3)
    states = [await limiter.acquire(key, 10) for _ in range(3)]
    assert [s.requests_remaining for s in states] == [2, 1, 0]
    assert all(s.requests_limit == 3 and s.tokens_limit is None for s in states)
    assert states[-1].requests_reset > 0
    with pytest.raises(RateLimited) as refused:
        await limiter.acquire(key, 10)
    error = refused.value
    assert error.code == "rate_limit_requests" and "requests per minute (limit 3)" in error.message
    assert 0 < error.retry_after <= 20.0  # one request comes back every 20 s at 3/min
    state: LimitState = error.limits  # type: ignore[attr-defined]
    assert (state.requests_limit, state.requests_remaining) == (3, 0)


async def test_buckets_refill_continuously(make_limiter: Any) -> None:
    limiter: Limiter = make_limiter(NO_DEFAULTS)
    key = _key(rpm=120)  # one request back every 0.5 s
    started = time.monotonic()
    for _ in range(120):
        await limiter.acquire(key, 0)
    # On a loaded machine the 120 calls may take longer than 0.5 s, and what came back meanwhile
    # is admitted too: a refusal comes after at most that many more.
    extra = 0
    while True:
        try:
            await limiter.acquire(key, 0)
        except RateLimited:
            break
        extra += 1
        assert extra <= (time.monotonic() - started) * 2 + 1, "the bucket does not run dry"
    await asyncio.sleep(0.6)
    assert (await limiter.acquire(key, 0)).requests_remaining is not None


async def test_tokens_per_minute_charges_prompt_then_output(make_limiter: Any) -> None:
    limiter: Limiter = make_limiter(NO_DEFAULTS)
    key = _key(tpm=1_000)
    started = time.monotonic()
    first = await limiter.acquire(key, 300)
    assert (first.tokens_limit, first.tokens_remaining) == (1_000, 700)
    await limiter.record_tokens(key, 650)  # the output, charged when the request ends
    second = await limiter.acquire(key, 40)  # 50 left: a request may still start
    # 10 left, plus what refilled meanwhile (1000 a minute: one token per 60 ms of a loaded machine).
    assert second.tokens_remaining is not None
    assert 10 <= second.tokens_remaining <= 10 + (time.monotonic() - started) * 1_000 / 60
    await limiter.record_tokens(key, 100)  # now in debt: the next requests wait it out
    with pytest.raises(RateLimited) as refused:
        await limiter.acquire(key, 1)
    assert refused.value.code == "rate_limit_tokens" and refused.value.retry_after > 0


async def test_key_settings_override_defaults(make_limiter: Any) -> None:
    limiter: Limiter = make_limiter(Defaults(requests_per_minute=2, tokens_per_minute=None))
    default_key, own_key = _key(key_id=1), _key(rpm=5, key_id=2)
    assert (await limiter.acquire(default_key, 1)).requests_limit == 2
    assert (await limiter.acquire(own_key, 1)).requests_limit == 5
    unlimited = make_limiter(NO_DEFAULTS)
    state = await unlimited.acquire(_key(key_id=3), 10**9)
    assert state == LimitState()


async def test_keys_have_separate_buckets(make_limiter: Any) -> None:
    limiter: Limiter = make_limiter(NO_DEFAULTS)
    await limiter.acquire(_key(rpm=1, key_id=1), 0)
    with pytest.raises(RateLimited):
        await limiter.acquire(_key(rpm=1, key_id=1), 0)
    await limiter.acquire(_key(rpm=1, key_id=2), 0)


@pytest.mark.redis
async def test_replicas_share_one_limit_through_redis(clients: list[Any]) -> None:
    namespace = f"test:{uuid.uuid4().hex[:8]}"
    replicas = [RedisLimiter(client, NO_DEFAULTS, namespace) for client in clients]
    key = _key(rpm=10)
    outcomes = await asyncio.gather(
        *(replicas[i % 2].acquire(key, 1) for i in range(16)),
        return_exceptions=True,
    )
    admitted = [o for o in outcomes if isinstance(o, LimitState)]
    refused = [o for o in outcomes if isinstance(o, RateLimited)]
    assert (len(admitted), len(refused)) == (10, 6)  # ten per minute in total, not per replica
    assert sorted(s.requests_remaining or 0 for s in admitted) == list(range(10))


@pytest.mark.redis
async def test_an_unreachable_redis_lets_requests_through() -> None:
    client = redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    try:
        limiter = RedisLimiter(client, Defaults(1, None))
        assert await limiter.acquire(_key(), 5) == LimitState()
        assert await limiter.acquire(_key(), 5) == LimitState()
        await limiter.record_tokens(_key(tpm=10), 5)
    finally:
        await client.aclose()
