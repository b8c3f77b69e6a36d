"""Money over HTTP against the whole gateway (in process; a real process where a client hangs up
mid-stream): what a request costs, what is never billed,
spend limits and low balances refused before any work, abandoned streams billed for what was
generated. The store is read back after each case and must balance to the credit."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gatewright.core.accounts import KeyLimit
from gatewright.core.keys import key_prefix
from gatewright.store.db import create_engine
from gatewright.store.tables import holds, usage_records
from tests.conftest import MODEL
from tests.platform.audit import assert_consistent, wait_settled
from tests.platform.conftest import (
    IN_CREDITS,
    OUT_CREDITS,
    UNLIMITED,
    fake_prompt_tokens,
    sqlite_url,
    worst_case,
)
from tests.platform.wire import assert_error, auth, chat_body, stream_chat
from tests.support.accounts import accounts_on
from tests.support.app import FAKE_CATALOG, AppGateway
from tests.support.procs import Gateway, running_gateway

START = 100_000


async def _account(
    store: AsyncEngine, credits: int = START, limit: KeyLimit | None = None, rpm: int | None = None
) -> tuple[int, str]:
    """A fresh account with one API key, made in the gateway's store (as the CLI would)."""
    async with accounts_on(store) as accounts:
        account_id = await accounts.create_account("money", credits)
        made = await accounts.create_key(account_id, "api", limit=limit, requests_per_minute=rpm)
    return account_id, made.key


async def _traces(store: AsyncEngine, request_id: str) -> tuple[list[str], list[str]]:
    """The hold statuses and usage statuses a request left behind, once its hold is closed
    (settlements nobody waits for are written a moment after the response)."""
    deadline = time.monotonic() + 60  # a bound for a loaded machine, not a speed check
    while True:
        async with store.connect() as conn:
            held = [r.status for r in await conn.execute(select(holds).where(holds.c.request_id == request_id))]
            used = [
                r.status
                for r in await conn.execute(select(usage_records).where(usage_records.c.request_id == request_id))
            ]
        if "held" not in held or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    return held, used


async def test_a_request_is_charged_its_price_exactly_once(http: httpx.AsyncClient, store: AsyncEngine) -> None:
    account_id, key = await _account(store)
    response = await http.post(
        "/v1/chat/completions", json=chat_body("one two three four", max_tokens=3), headers=auth(key)
    )
    assert response.status_code == 200, response.text
    body, request_id = response.json(), response.headers["x-request-id"]
    usage = body["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (fake_prompt_tokens("one two three four"), 3)
    expected = usage["prompt_tokens"] * IN_CREDITS + usage["completion_tokens"] * OUT_CREDITS
    assert body["meta"]["usage"] == {"credits_used": expected, "usd_spent": expected / 2_000_000}
    result = await wait_settled(store, account_id, requests=[request_id])
    assert_consistent(result, START)
    assert result.charge_rows == {request_id: expected} and result.balance == START - expected
    record = result.usage[request_id]
    assert (record.input_tokens, record.output_tokens, record.status) == (7, 3, "ok")
    balance = (await http.get("/v1/billing/balance", headers=auth(key))).json()
    assert balance["balance"] == START - expected


@pytest.mark.parametrize("include_usage", [True, False])
async def test_streams_report_what_they_were_charged(
    http: httpx.AsyncClient, store: AsyncEngine, include_usage: bool
) -> None:
    account_id, key = await _account(store)
    body = chat_body("alpha beta gamma", stream_options={"include_usage": include_usage})
    result = await stream_chat(http, key, body)
    assert result.status == 200 and result.done
    expected = fake_prompt_tokens("alpha beta gamma") * IN_CREDITS + 3 * OUT_CREDITS
    assert result.credits_used == expected
    if include_usage:
        assert result.events[-1]["choices"] == [] and result.events[-1]["usage"]["completion_tokens"] == 3
    books = await wait_settled(store, account_id, requests=[result.request_id])
    assert_consistent(books, START)
    assert books.charge_rows == {result.request_id: expected}


@pytest.fixture(scope="module")
def process_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A real `gatewright serve`: a client hanging up mid-stream needs a real connection to close
    (the in-process transport delivers an answer whole)."""
    with running_gateway(tmp_path_factory.mktemp("money-process"), catalog=FAKE_CATALOG, env=UNLIMITED) as gw:
        yield gw


@pytest.fixture
async def process_http(process_gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=process_gateway.url, timeout=60) as client:
        yield client


@pytest.fixture
async def process_store(process_gateway: Gateway) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(sqlite_url(process_gateway))
    try:
        yield engine
    finally:
        await engine.dispose()


async def test_an_abandoned_stream_is_billed_for_what_was_generated(
    process_http: httpx.AsyncClient, process_store: AsyncEngine
) -> None:
    http, store = process_http, process_store
    account_id, key = await _account(store)
    words = " ".join(f"w{i}" for i in range(60))  # 60 tokens at 20 ms each: far longer than we stay
    counted_before = await _credits_metric(http, "fake-slow")
    result = await stream_chat(http, key, chat_body(words, model="fake-slow"), leave_after=3)
    assert result.status == 200 and not result.done and result.credits_used is None
    books = await wait_settled(store, account_id, requests=[result.request_id])
    assert_consistent(books, START)
    record = books.usage[result.request_id]
    assert record.status == "aborted"
    assert 2 <= record.output_tokens < 60, "generation went on after the client left"
    assert record.credits == record.input_tokens * IN_CREDITS + record.output_tokens * OUT_CREDITS
    assert books.balance == START - record.credits
    assert await _credits_metric(http, "fake-slow") - counted_before == record.credits  # /metrics agrees


async def _credits_metric(http: httpx.AsyncClient, model: str) -> float:
    text = (await http.get("/metrics")).text
    line = f'gatewright_credits_total{{model="{model}"}} '
    return next((float(row.removeprefix(line)) for row in text.splitlines() if row.startswith(line)), 0.0)


async def test_a_low_balance_is_refused_before_any_work(http: httpx.AsyncClient, store: AsyncEngine) -> None:
    account_id, key = await _account(store, credits=100)
    body = chat_body("hello billing world", max_tokens=64)
    response = await http.post("/v1/chat/completions", json=body, headers=auth(key))
    assert_error(response, 402, "insufficient_credits")
    need = worst_case(fake_prompt_tokens("hello billing world"), 64)
    assert f"may cost up to {need} credits" in response.json()["error"]["message"]
    assert "x-ratelimit-limit-requests" in response.headers  # counted by the limiter, so reported
    assert await _traces(store, response.headers["x-request-id"]) == ([], [])  # not even a hold
    small = await http.post("/v1/chat/completions", json={**body, "max_tokens": 5}, headers=auth(key))
    assert small.status_code == 200  # the same request fits once its worst case does
    assert_consistent(await wait_settled(store, account_id), 100)


async def test_a_key_spend_limit_is_refused_before_any_work(
    http: httpx.AsyncClient, store: AsyncEngine, platform_gateway: AppGateway
) -> None:
    # 0.00005 USD = 100 credits a day; each request below may cost 32 and costs 24.
    account_id, key = await _account(store, limit=KeyLimit("day", 0.00005))
    body = chat_body("hello billing world", max_tokens=5)
    for _ in range(3):
        assert (await http.post("/v1/chat/completions", json=body, headers=auth(key))).status_code == 200
    refused = await http.post("/v1/chat/completions", json=body, headers=auth(key))
    assert_error(refused, 402, "key_limit_exceeded")
    message = refused.json()["error"]["message"]
    assert "spending limit of 0.00005 USD per day leaves 0.000014 USD" in message
    assert await _traces(store, refused.headers["x-request-id"]) == ([], [])
    key_object = (await http.get("/v1/key", headers=auth(key))).json()["data"]
    assert key_object["monthly_usage"] == 72 / 2_000_000

    # The management side raises the limit; the next request goes through at once.
    async with accounts_on(store) as accounts:
        management = await accounts.create_key(account_id, "management", scopes=[])
    patched = await http.patch(
        f"/v1/keys/{key_prefix(key)}",
        json={"limit": {"retention": "day", "threshold": 0.001}},
        headers=auth(management.key),
    )
    assert patched.status_code == 200
    assert (await http.post("/v1/chat/completions", json=body, headers=auth(key))).status_code == 200
    assert_consistent(await wait_settled(store, account_id), START)


async def test_refused_and_failed_requests_are_never_billed(
    http: httpx.AsyncClient, store: AsyncEngine, platform_gateway: AppGateway
) -> None:
    account_id, key = await _account(store)
    _, poor = await _account(store, credits=1)
    limited_account, limited = await _account(store, rpm=1)
    disabled_account, disabled = await _account(store)
    async with accounts_on(store) as accounts:
        await accounts.update_key(key_prefix(disabled), disabled_account, {"disabled": True})
    cases: list[tuple[str, int, str | None, dict[str, str], dict[str, object]]] = [
        ("bad body", 400, None, auth(key), {"model": "fake", "messages": "hello"}),
        ("bad param", 400, None, auth(key), chat_body(temperature=7)),
        ("too long", 400, "context_length_exceeded", auth(key), chat_body(max_tokens=100_000)),
        ("no key", 401, "missing_api_key", {}, chat_body()),
        ("unknown key", 401, "invalid_api_key", auth("a" * 32), chat_body()),
        ("no credits", 402, "insufficient_credits", auth(poor), chat_body()),
        ("disabled", 403, "key_disabled", auth(disabled), chat_body()),
        ("no model", 404, "model_not_found", auth(key), chat_body(model="nope")),
        ("upstream 422", 422, None, auth(key), chat_body(model="fake-422")),
        ("upstream 500", 500, None, auth(key), chat_body(model="fake-500")),
        ("mid-stream failure", 502, None, auth(key), chat_body("a b c d e", model="fake-midstream-error")),
    ]
    failed_upstream: list[str] = []  # held, then failed: a zero-credit usage record each
    for name, status, code, headers, body in cases:
        response = await http.post("/v1/chat/completions", json=body, headers=headers)
        assert_error(response, status, code)
        if name.startswith(("upstream", "mid-stream")):
            failed_upstream.append(response.headers["x-request-id"])
        held, used = await _traces(store, response.headers["x-request-id"])
        assert set(used) <= {"error"}, name  # failures after the hold leave a zero-credit record
        assert set(held) <= {"settled"}, name
    assert (await http.post("/v1/chat/completions", json=chat_body(), headers=auth(limited))).status_code == 200
    over = await http.post("/v1/chat/completions", json=chat_body(), headers=auth(limited))
    assert_error(over, 429, "rate_limit_requests")
    assert await _traces(store, over.headers["x-request-id"]) == ([], [])

    books = await wait_settled(store, account_id, requests=failed_upstream)
    assert_consistent(books, START)
    assert books.balance == START and books.charges == 0
    assert {r.status for r in books.usage.values()} == {"error"}
    assert_consistent(await wait_settled(store, limited_account), START)


async def test_an_error_inside_a_stream_is_not_billed(http: httpx.AsyncClient, store: AsyncEngine) -> None:
    account_id, key = await _account(store)
    result = await stream_chat(http, key, chat_body("a b c d e", model="fake-midstream-error"))
    assert result.status == 200 and result.error is not None and result.credits_used is None
    books = await wait_settled(store, account_id, requests=[result.request_id])
    assert_consistent(books, START)
    assert books.balance == START and books.usage[result.request_id].status == "error"


async def test_rate_limit_headers_on_every_model_response(http: httpx.AsyncClient, store: AsyncEngine) -> None:
    _, key = await _account(store, rpm=2)
    seen = []
    for _ in range(3):
        response = await http.post("/v1/chat/completions", json=chat_body(), headers=auth(key))
        seen.append(response)
    assert [r.status_code for r in seen] == [200, 200, 429]
    for response, remaining in zip(seen, ("1", "0", "0"), strict=True):
        assert response.headers["x-ratelimit-limit-requests"] == "2"
        assert response.headers["x-ratelimit-remaining-requests"] == remaining
        assert response.headers["x-ratelimit-reset-requests"].endswith("s")
        assert int(response.headers["x-ratelimit-limit-tokens"]) > 0
        assert "x-ratelimit-remaining-tokens" in response.headers and "x-ratelimit-reset-tokens" in response.headers
    refused = seen[-1]
    assert_error(refused, 429, "rate_limit_requests")
    assert 1 <= int(refused.headers["retry-after"]) <= 30  # one request comes back every 30 s


async def test_key_rate_limits_are_set_through_the_key_api(
    http: httpx.AsyncClient, platform_gateway: AppGateway
) -> None:
    management = auth(platform_gateway.management_key)
    made = await http.post(
        "/v1/keys", json={"rate_limit": {"requests_per_minute": 1, "tokens_per_minute": 500}}, headers=management
    )
    key = made.json()["data"]["key"]
    first = await http.post("/v1/chat/completions", json=chat_body(), headers=auth(key))
    assert first.status_code == 200
    assert (first.headers["x-ratelimit-limit-requests"], first.headers["x-ratelimit-limit-tokens"]) == ("1", "500")
    assert_error(await http.post("/v1/chat/completions", json=chat_body(), headers=auth(key)), 429)
    raised = await http.patch(
        f"/v1/keys/{key_prefix(key)}", json={"rate_limit": {"requests_per_minute": 100}}, headers=management
    )
    assert raised.status_code == 200
    again = await http.post("/v1/chat/completions", json=chat_body(), headers=auth(key))
    assert again.status_code == 200 and again.headers["x-ratelimit-limit-requests"] == "100"


def test_the_embedded_model_is_billed_its_catalog_price(gateway: Gateway) -> None:
    """One request to the real model through a real gateway: charged exactly its price."""
    with httpx.Client(base_url=gateway.url, timeout=120, headers=auth(gateway.api_key)) as http:
        before = http.get("/v1/billing/balance").json()["balance"]
        response = http.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3},
        )
        assert response.status_code == 200, response.text
        usage, meta = response.json()["usage"], response.json()["meta"]["usage"]
        cached = usage["prompt_tokens_details"]["cached_tokens"]
        # default.toml: 0.02 / 0.01 (cached) / 0.06 USD per million = 0.04 / 0.02 / 0.12 credits per token
        exact = (usage["prompt_tokens"] - cached) * 0.04 + cached * 0.02 + usage["completion_tokens"] * 0.12
        assert meta["credits_used"] == math.ceil(round(exact, 6)) > 0
        after = http.get("/v1/billing/balance").json()["balance"]
        assert before - after == meta["credits_used"]
        records = http.get("/v1/billing/usage", params={"limit": 1}).json()["data"]
        assert records[0]["request_id"] == response.headers["x-request-id"]
        assert (records[0]["input_tokens"], records[0]["output_tokens"]) == (
            usage["prompt_tokens"],
            usage["completion_tokens"],
        )
        assert records[0]["credits"] == meta["credits_used"] and records[0]["model"] == MODEL
