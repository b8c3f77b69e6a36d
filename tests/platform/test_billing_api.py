"""The billing API over HTTP against a real gateway process: balance in credits (v1) and USD (v2),
the detail object, adding credits, and the usage listing with its filters and pages."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gatewright.core.keys import key_prefix
from tests.platform.test_keys_api import ISO_UTC
from tests.platform.wire import assert_error, auth, chat_body
from tests.support.accounts import accounts_on
from tests.support.app import AppGateway, app_gateway

BALANCE_FIELDS = {
    "balance",
    "lowBalance",
    "lowBalanceThreshold",
    "lastUpdated",
    "autoDebitStatus",
    "status",
    "statusExplanation",
}


async def test_balance_objects_agree_in_credits_and_usd(http: httpx.AsyncClient, platform_gateway: AppGateway) -> None:
    for key in (platform_gateway.api_key, platform_gateway.management_key):  # every key reads billing
        v1 = (await http.get("/v1/billing/balance", headers=auth(key))).json()
        assert set(v1) >= BALANCE_FIELDS
        assert isinstance(v1["balance"], int) and isinstance(v1["lowBalance"], bool)
        assert v1["lowBalanceThreshold"] == 10_000 and v1["autoDebitStatus"] == "disabled"
        assert ISO_UTC.fullmatch(v1["lastUpdated"])
        assert (v1["status"], v1["statusExplanation"]) == ("current", "Balance is current and up to date")
        assert v1["available"] == v1["balance"] - v1["reserved"]
        v2 = (await http.get("/v2/billing", headers=auth(key))).json()
        assert v2 == {"current_balance": v1["balance"] / 2_000_000, "currency": "USD"}
        detail = (await http.get("/v2/billing/detail", headers=auth(key))).json()
        assert detail["user_id"] == 1 and detail["currency"] == "USD"
        assert detail["current_balance"] == v2["current_balance"]
        assert detail["autotopup_settings"] == {"is_enabled": False, "currency": "USD"}


@pytest.mark.parametrize("path", ["/v1/billing/balance", "/v2/billing", "/v2/billing/detail", "/v1/billing/usage"])
async def test_billing_needs_a_known_enabled_key(
    http: httpx.AsyncClient, platform_gateway: AppGateway, path: str
) -> None:
    assert_error(await http.get(path), 401, "missing_api_key")
    assert_error(await http.get(path, headers=auth("0" * 32)), 401, "invalid_api_key")
    made = (await http.post("/v1/keys", json={}, headers=auth(platform_gateway.management_key))).json()["data"]
    await http.patch(
        f"/v1/keys/{made['prefix']}", json={"disabled": True}, headers=auth(platform_gateway.management_key)
    )
    assert_error(await http.get(path, headers=auth(made["key"])), 403, "key_disabled")


GRANT = "/v1/admin/accounts/1/credits"


async def test_the_operator_grants_credits_as_ledger_entries_with_who(
    http: httpx.AsyncClient, platform_gateway: AppGateway, store: AsyncEngine
) -> None:
    headers = auth(platform_gateway.operator_key)
    before = (await http.get("/v1/billing/balance", headers=auth(platform_gateway.management_key))).json()["balance"]
    added = await http.post(GRANT, json={"credits": 5_000, "note": "invoice 17"}, headers=headers)
    assert added.status_code == 200, added.text
    assert added.json()["credits_added"] == 5_000 and added.json()["balance"] == before + 5_000
    in_usd = (await http.post(GRANT, json={"usd": 0.25}, headers=headers)).json()
    assert in_usd["credits_added"] == 500_000 and in_usd["balance"] == before + 505_000
    removed = (await http.post(GRANT, json={"credits": -505_000}, headers=headers)).json()
    assert removed["balance"] == before
    async with accounts_on(store) as accounts:
        rows = await accounts.ledger_entries(1, limit=3)
    operator = f"operator:{key_prefix(platform_gateway.operator_key or '')}"
    assert [(r.credits, r.note, r.actor) for r in rows] == [
        (-505_000, "granted by the operator", operator),
        (500_000, "granted by the operator", operator),
        (5_000, "invoice 17", operator),
    ]
    # The account sees the same entries in its billing history.
    listed = (await http.get("/v1/billing/history?limit=3", headers=auth(platform_gateway.management_key))).json()
    assert [(e["credits"], e["kind"], e["actor"]) for e in listed["data"]] == [
        (-505_000, "adjust", operator),
        (500_000, "grant", operator),
        (5_000, "grant", operator),
    ]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "credits"),
        ({"credits": 1, "usd": 1}, "credits"),
        ({"credits": 0}, "credits"),
        ({"credits": 1.5}, "credits"),
        ({"credits": -(10**15)}, "credits"),  # more than the account has
        ({"credits": 2 * 10**15}, "credits"),  # past the largest balance
        ({"credits": 10**19}, "credits"),  # not even a BIGINT
        ({"usd": "ten"}, "usd"),
        ({"amount": 5}, "amount"),
    ],
)
async def test_invalid_credit_changes_get_400(
    http: httpx.AsyncClient, platform_gateway: AppGateway, body: dict[str, object], param: str
) -> None:
    response = await http.post(GRANT, json=body, headers=auth(platform_gateway.operator_key))
    assert_error(response, 400, param=param)


async def test_no_account_key_can_add_credits(http: httpx.AsyncClient, platform_gateway: AppGateway) -> None:
    for key in (platform_gateway.api_key, platform_gateway.management_key):
        response = await http.post(GRANT, json={"credits": 10}, headers=auth(key))
        assert_error(response, 403, "operator_key_required")
    # The route the management key once used to top itself up is gone.
    gone = await http.post("/v1/billing/credits", json={"credits": 10}, headers=auth(platform_gateway.management_key))
    assert gone.status_code in (404, 405)


async def test_low_balance_status(http: httpx.AsyncClient, platform_gateway: AppGateway) -> None:
    headers = auth(platform_gateway.management_key)
    operator = auth(platform_gateway.operator_key)
    balance = (await http.get("/v1/billing/balance", headers=headers)).json()["available"]
    await http.post(GRANT, json={"credits": -(balance - 5_000)}, headers=operator)
    try:
        low = (await http.get("/v1/billing/balance", headers=headers)).json()
        assert (low["balance"], low["lowBalance"], low["status"]) == (5_000, True, "low")
        await http.post(GRANT, json={"credits": -5_000}, headers=operator)
        empty = (await http.get("/v1/billing/balance", headers=headers)).json()
        assert (empty["balance"], empty["lowBalance"], empty["status"]) == (0, True, "depleted")
        assert "402" in empty["statusExplanation"]
        refused = await http.post("/v1/chat/completions", json=chat_body(), headers=auth(platform_gateway.api_key))
        assert_error(refused, 402, "insufficient_credits")
    finally:
        await http.post(GRANT, json={"credits": balance}, headers=operator)


async def _usage(http: httpx.AsyncClient, caller: str | None, **params: object) -> httpx.Response:
    return await http.get("/v1/billing/usage", params=params, headers=auth(caller))  # type: ignore[arg-type]


async def test_usage_listing_filters_pages_and_totals(http: httpx.AsyncClient, platform_gateway: AppGateway) -> None:
    management = platform_gateway.management_key
    made = (await http.post("/v1/keys", json={"name": "usage"}, headers=auth(management))).json()["data"]
    other = (await http.post("/v1/keys", json={"name": "usage-2"}, headers=auth(management))).json()["data"]
    started = datetime.now(UTC) - timedelta(seconds=1)
    ids = []
    for i, (key, model) in enumerate([(made, "fake"), (made, "fake-alias"), (made, "fake-slow"), (other, "fake")]):
        response = await http.post("/v1/chat/completions", json=chat_body(f"word {i}", model), headers=auth(key["key"]))
        assert response.status_code == 200
        ids.append(response.headers["x-request-id"])

    listed = (await _usage(http, management, key=made["prefix"])).json()
    assert listed["object"] == "list" and listed["has_more"] is False
    assert [r["request_id"] for r in listed["data"]] == ids[2::-1]  # newest first
    record = listed["data"][-1]
    assert record["key_prefix"] == made["prefix"] and record["model"] == "fake" and record["status"] == "ok"
    assert record["input_tokens"] == 5 and record["output_tokens"] == 2 and record["cached_tokens"] == 0
    assert record["credits"] == 5 * 2 + 2 * 4 and record["usd"] == record["credits"] / 2_000_000
    assert record["total_tokens"] == 7 and ISO_UTC.fullmatch(record["created_at"])
    assert listed["totals"]["requests"] == 3 and listed["totals"]["credits"] == sum(
        r["credits"] for r in listed["data"]
    )

    by_model = (await _usage(http, management, model="fake-alias", key=made["prefix"])).json()["data"]
    assert [r["request_id"] for r in by_model] == ids[1::-1]  # the alias lists its model's records
    slow = (await _usage(http, management, model="fake-slow", since=started.isoformat())).json()["data"]
    assert [r["request_id"] for r in slow] == [ids[2]]
    assert (await _usage(http, management, until=started.isoformat(), key=made["prefix"])).json()["data"] == []
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert (await _usage(http, management, since=later)).json()["data"] == []

    # The gateway is shared with other modules: page from this test's first record on, so requests that
    # earlier tests made within the last second cannot enter the window (one writer commits in order).
    ours = record["created_at"]
    first = (await _usage(http, management, since=ours, limit=2)).json()
    assert first["has_more"] is True and len(first["data"]) == 2 and first["totals"]["requests"] == 4
    second = (await _usage(http, management, since=ours, limit=2, after=first["last_id"])).json()
    assert second["has_more"] is False
    assert [r["request_id"] for r in first["data"] + second["data"]] == ids[::-1]


async def test_an_api_key_lists_only_its_own_usage(http: httpx.AsyncClient, platform_gateway: AppGateway) -> None:
    made = (await http.post("/v1/keys", json={}, headers=auth(platform_gateway.management_key))).json()["data"]
    response = await http.post("/v1/chat/completions", json=chat_body(), headers=auth(made["key"]))
    own = (await _usage(http, made["key"])).json()["data"]
    assert [r["request_id"] for r in own] == [response.headers["x-request-id"]]
    forbidden = await _usage(http, made["key"], key=key_prefix(str(platform_gateway.api_key)))
    assert_error(forbidden, 403, "management_key_required", "key")


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"since": "yesterday"}, "since"),
        ({"after": -3}, "after"),
        ({"status": "great"}, "status"),
        ({"colour": "blue"}, "colour"),
    ],
)
async def test_invalid_usage_queries_get_400(
    http: httpx.AsyncClient, platform_gateway: AppGateway, params: dict[str, object], param: str
) -> None:
    assert_error(await _usage(http, platform_gateway.management_key, **params), 400, param=param)


async def test_a_bare_gateway_has_no_platform_endpoints(tmp_path: Path) -> None:
    with app_gateway(tmp_path, platform=False) as gw:
        async with gw.async_http() as http:
            for path in ("/v1/keys", "/v1/key", "/v1/billing/balance", "/v2/billing"):
                assert_error(await http.get(path), 404, "platform_disabled")
            chat = await http.post("/v1/chat/completions", json=chat_body())
            assert chat.status_code == 200 and "x-ratelimit-limit-requests" not in chat.headers
            await asyncio.sleep(0)
