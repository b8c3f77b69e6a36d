"""Many accounts on one gateway, with the operator apart (issue 17), in process: the operator's
accounts API, grants, redemption codes under concurrency, key policies, and isolation between
accounts tried as an attacker would (guessed prefixes, ids and filters)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gatewright.core.keys import key_prefix
from tests.platform.conftest import UNLIMITED_SETTINGS
from tests.platform.wire import assert_error, auth, chat_body
from tests.support.app import AppGateway, app_gateway, on_app_loop
from tests.tasks.conftest import RECEIVER_ALLOW
from tests.tasks.receiver import running_receiver


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppGateway]:
    root = tmp_path_factory.mktemp("accounts")
    # Loopback webhooks allowed: the task isolation test's receiver listens there.
    with app_gateway(root, starting_credits=2_000_000, outbound_allow=RECEIVER_ALLOW, **UNLIMITED_SETTINGS) as running:
        yield running


def _op(gw: AppGateway) -> dict[str, str]:
    return auth(gw.operator_key)


def _new_account(gw: AppGateway, name: str, credits: int = 1_000_000, email: str | None = None) -> dict[str, Any]:
    made = gw.http.post("/v1/admin/accounts", json={"name": name, "credits": credits, "email": email}, headers=_op(gw))
    assert made.status_code == 200, made.text
    body: dict[str, Any] = made.json()
    assert body["management_key"].startswith("gwm-") and body["balance"] == credits
    return body


def _api_key(gw: AppGateway, management: str, **policy: Any) -> dict[str, Any]:
    made = gw.http.post("/v1/keys", json={"scopes": ["model:chat"], **policy}, headers=auth(management))
    assert made.status_code == 200, made.text
    data: dict[str, Any] = made.json()["data"]
    return data


def test_the_operator_key_is_its_own_kind_and_never_calls_models(gw: AppGateway) -> None:
    assert gw.operator_key and gw.operator_key.startswith("gwo-")
    chat = gw.http.post("/v1/chat/completions", json=chat_body(), headers=_op(gw))
    assert_error(chat, 403, "operator_key_not_allowed")
    messages = gw.http.post(
        "/v1/messages",
        json={"model": "fake", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-api-key": gw.operator_key or ""},
    )
    assert messages.status_code == 403 and messages.json()["type"] == "error"  # Anthropic's error shape
    for path in ("/v1/keys", "/v1/billing/balance", "/v1/billing/usage"):
        assert_error(gw.http.get(path, headers=_op(gw)), 403, "operator_key_not_allowed")
    # …and accounts' keys never reach the operator's routes.
    for key in (gw.api_key, gw.management_key):
        assert_error(gw.http.get("/v1/admin/accounts", headers=auth(key)), 403, "operator_key_required")
    assert_error(gw.http.get("/v1/admin/accounts", headers=auth("gwo-" + "0" * 32)), 401, "invalid_api_key")
    assert_error(gw.http.get("/v1/admin/accounts"), 401, "missing_api_key")


def test_account_lifecycle(gw: AppGateway) -> None:
    team = _new_account(gw, "team-a", email="a@example.com")
    management = team["management_key"]
    key = _api_key(gw, management)
    answer = gw.http.post("/v1/chat/completions", json=chat_body(), headers=auth(key["key"]))
    assert answer.status_code == 200, answer.text
    detail = gw.http.get("/v2/billing/detail", headers=auth(key["key"])).json()
    assert (detail["user_id"], detail["name"], detail["email"]) == (team["id"], "team-a", "a@example.com")
    # What the gateway's credit lease holds unused goes back once it is idle (2 s).
    row = _when_nothing_reserved(gw, team["id"])
    assert row["spent"] > 0 and row["balance"] == 1_000_000 - row["spent"] and row["reserved"] == 0
    listed = {a["id"]: a for a in gw.http.get("/v1/admin/accounts", headers=_op(gw)).json()["data"]}
    assert listed[team["id"]] == row

    renamed = gw.http.patch(f"/v1/admin/accounts/{team['id']}", json={"name": "team-b"}, headers=_op(gw)).json()
    assert renamed["name"] == "team-b"
    # Disabled: its keys stop at once (this process forgets its cache; the ledger refuses the rest).
    gw.http.patch(f"/v1/admin/accounts/{team['id']}", json={"disabled": True}, headers=_op(gw))
    refused = gw.http.post("/v1/chat/completions", json=chat_body(), headers=auth(key["key"]))
    assert_error(refused, 403, "account_disabled")
    assert_error(gw.http.get("/v1/keys", headers=auth(management)), 403, "account_disabled")
    gw.http.patch(f"/v1/admin/accounts/{team['id']}", json={"disabled": False}, headers=_op(gw))
    assert gw.http.post("/v1/chat/completions", json=chat_body(), headers=auth(key["key"])).status_code == 200

    deleted = gw.http.delete(f"/v1/admin/accounts/{team['id']}", headers=_op(gw))
    assert deleted.status_code == 200, deleted.text
    assert_error(gw.http.post("/v1/chat/completions", json=chat_body(), headers=auth(key["key"])), 401)
    assert_error(gw.http.get(f"/v1/admin/accounts/{team['id']}", headers=_op(gw)), 404)
    assert team["id"] not in [a["id"] for a in gw.http.get("/v1/admin/accounts", headers=_op(gw)).json()["data"]]
    assert_error(gw.http.get("/v1/admin/accounts/abc", headers=_op(gw)), 400, param="account_id")


def test_disabling_refuses_billed_requests_even_with_a_cached_key(gw: AppGateway) -> None:
    """Another replica's cache still holds the key: the ledger's reservation refuses it anyway."""
    team = _new_account(gw, "cached")
    key = _api_key(gw, team["management_key"])["key"]
    assert gw.http.post("/v1/chat/completions", json=chat_body(), headers=auth(key)).status_code == 200
    authenticator = gw.services.platform.platform.authenticator  # type: ignore[union-attr]
    cache = dict(authenticator._cache)  # what this process knew before the change
    gw.http.patch(f"/v1/admin/accounts/{team['id']}", json={"disabled": True}, headers=_op(gw))
    authenticator._cache.update(cache)  # as if the change was made on another replica
    refused = gw.http.post("/v1/chat/completions", json=chat_body(), headers=auth(key))
    assert_error(refused, 403, "account_disabled")


def _soon() -> int:
    """An expiry (whole seconds) at least 2 s away: `int(time.time()) + 1` could be a few ms away, and
    the request that sets it, slower than that on a loaded machine, was refused as "in the past"."""
    return math.ceil(time.time()) + 2


def _sleep_past(expires_at: int) -> None:
    while time.time() <= expires_at:
        time.sleep(max(0.0, expires_at - time.time()) + 0.05)


def _when_nothing_reserved(gw: AppGateway, account_id: int, within: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        row: dict[str, Any] = gw.http.get(f"/v1/admin/accounts/{account_id}", headers=_op(gw)).json()
        if not row["reserved"] or time.monotonic() > deadline:
            return row
        time.sleep(0.1)


def test_a_busy_account_cannot_be_deleted(gw: AppGateway) -> None:
    team = _new_account(gw, "busy")
    key = _api_key(gw, team["management_key"])["key"]
    # A request in flight holds credits (a slow model streams for a while: 20 words at 0.2 s, long
    # enough that the refused delete still meets it on a loaded machine; 3 words were 0.6 s).
    client = gw.async_http()
    words = " ".join(["busy"] * 20)

    async def slow() -> httpx.Response:
        return await client.post(
            "/v1/chat/completions", json=chat_body(words, model="slow", max_tokens=40), headers=auth(key)
        )

    async def scenario() -> tuple[httpx.Response, httpx.Response]:
        pending = asyncio.create_task(slow())
        for _ in range(200):
            row = (await client.get(f"/v1/admin/accounts/{team['id']}", headers=_op(gw))).json()
            if row["reserved"]:
                break
            await asyncio.sleep(0.02)
        busy = await client.delete(f"/v1/admin/accounts/{team['id']}", headers=_op(gw))
        return busy, await pending

    busy, finished = asyncio.run(scenario())
    asyncio.run(client.aclose())
    assert_error(busy, 409, "account_busy")
    assert finished.status_code == 200
    assert _when_nothing_reserved(gw, team["id"])["reserved"] == 0  # the idle lease went back
    assert gw.http.delete(f"/v1/admin/accounts/{team['id']}", headers=_op(gw)).status_code == 200


def test_a_code_pays_out_once_under_concurrent_redeemers(gw: AppGateway) -> None:
    teams = [_new_account(gw, f"redeemer-{i}", credits=0) for i in range(3)]
    minted = gw.http.post("/v1/admin/codes", json={"credits": 777, "count": 2}, headers=_op(gw))
    assert minted.status_code == 200, minted.text
    codes = [c["code"] for c in minted.json()["data"]]
    assert all(c.startswith("gwr-") for c in codes)

    async def redeem_all(code: str) -> list[httpx.Response]:
        async with gw.async_http() as client:
            calls = [
                client.post("/v1/billing/redeem", json={"code": code}, headers=auth(team["management_key"]))
                for team in teams
                for _ in range(8)
            ]
            return list(await asyncio.gather(*calls))

    answers = asyncio.run(redeem_all(codes[0]))
    assert sorted(a.status_code for a in answers) == [200] + [409] * 23
    for answer in answers:
        if answer.status_code == 409:
            assert_error(answer, 409, "code_redeemed")
    balances = [gw.http.get("/v1/billing/balance", headers=auth(t["management_key"])).json()["balance"] for t in teams]
    assert sorted(balances) == [0, 0, 777]
    listed = {c["prefix"]: c for c in gw.http.get("/v1/admin/codes", headers=_op(gw)).json()["data"]}
    assert listed[key_prefix(codes[0])]["redeemed_by"] in [t["id"] for t in teams]
    assert "code" not in listed[key_prefix(codes[0])]  # the secret is shown at minting only
    history = gw.http.get("/v1/billing/history", headers=auth(teams[balances.index(777)]["management_key"])).json()
    assert [(e["kind"], e["credits"]) for e in history["data"]] == [("redeem", 777)]

    unknown = gw.http.post(
        "/v1/billing/redeem", json={"code": "gwr-" + "0" * 32}, headers=auth(teams[0]["management_key"])
    )
    assert_error(unknown, 404, "code_not_found")
    expires_at = _soon()
    soon = gw.http.post("/v1/admin/codes", json={"credits": 5, "expires_at": expires_at}, headers=_op(gw)).json()[
        "data"
    ][0]["code"]
    _sleep_past(expires_at)
    expired = gw.http.post("/v1/billing/redeem", json={"code": soon}, headers=auth(teams[0]["management_key"]))
    assert_error(expired, 410, "code_expired")
    # An API key cannot redeem (management keys do), nor can the operator redeem into nothing.
    assert_error(gw.http.post("/v1/billing/redeem", json={"code": codes[1]}, headers=auth(gw.api_key)), 403)
    assert_error(gw.http.post("/v1/billing/redeem", json={"code": codes[1]}, headers=_op(gw)), 403)


def test_model_allow_list_and_expiry(gw: AppGateway) -> None:
    management = gw.management_key or ""
    key = _api_key(gw, management, models=["echo-alias"], name="echo only")
    assert key["models"] == ["echo-alias"]
    shown = [m["id"] for m in gw.http.get("/v1/models", headers=auth(key["key"])).json()["data"]]
    assert shown == ["echo"]
    assert len(gw.http.get("/v1/models").json()["data"]) > 1  # without a key: the whole catalog
    ok = gw.http.post("/v1/chat/completions", json=chat_body(model="fake:echo@1"), headers=auth(key["key"]))
    assert ok.status_code == 200, ok.text
    refused = gw.http.post("/v1/chat/completions", json=chat_body(model="fake"), headers=auth(key["key"]))
    assert_error(refused, 403, "model_not_allowed", param="model")
    anthropic = gw.http.post(
        "/v1/messages",
        json={"model": "fake", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-api-key": key["key"]},
    )
    assert anthropic.status_code == 403 and anthropic.json()["error"]["type"] == "permission_error"
    counted = gw.http.post(
        "/v1/messages/count_tokens",
        json={"model": "fake", "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-api-key": key["key"]},
    )
    assert counted.status_code == 403 and counted.json()["error"]["type"] == "permission_error"
    embedded = gw.http.post("/v1/embeddings", json={"model": "fake", "input": "hi"}, headers=auth(key["key"]))
    assert embedded.status_code in (400, 403, 404), embedded.text  # never computed for this key
    bad = gw.http.post("/v1/keys", json={"models": ["no-such-model"]}, headers=auth(management))
    assert_error(bad, 400, param="models[0]")
    assert_error(gw.http.post("/v1/keys", json={"models": []}, headers=auth(management)), 400, param="models")

    past = gw.http.post("/v1/keys", json={"expires_at": int(time.time()) - 10}, headers=auth(management))
    assert_error(past, 400, param="expires_at")
    expires_at = _soon()
    expiring = _api_key(gw, management, expires_at=expires_at)
    assert expiring["expires_at"] is not None
    _sleep_past(expires_at)
    expired = gw.http.post("/v1/chat/completions", json=chat_body(), headers=auth(expiring["key"]))
    assert_error(expired, 401, "key_expired")
    # Existing keys (no policy) are unchanged.
    assert gw.http.post("/v1/chat/completions", json=chat_body(), headers=auth(gw.api_key)).status_code == 200


def test_one_account_never_reaches_another(gw: AppGateway) -> None:
    a = _new_account(gw, "victim")
    b = _new_account(gw, "attacker")
    a_key = _api_key(gw, a["management_key"])
    assert gw.http.post("/v1/chat/completions", json=chat_body(), headers=auth(a_key["key"])).status_code == 200
    b_mgmt = auth(b["management_key"])
    prefix = a_key["prefix"]
    assert_error(gw.http.patch(f"/v1/keys/{prefix}", json={"disabled": True}, headers=b_mgmt), 404)
    assert_error(gw.http.delete(f"/v1/keys/{prefix}", headers=b_mgmt), 404)
    assert prefix not in [k["prefix"] for k in gw.http.get("/v1/keys", headers=b_mgmt).json()["data"]]
    usage = gw.http.get("/v1/billing/usage", params={"key": prefix}, headers=b_mgmt).json()
    assert usage["data"] == [] and usage["totals"]["requests"] == 0
    daily = gw.http.get("/v1/usage/daily", headers=b_mgmt).json()
    assert daily["data"] == []
    assert_error(gw.http.get("/v1/usage/daily", params={"account": a["id"]}, headers=b_mgmt), 404)
    assert gw.http.get("/v1/billing/balance", headers=b_mgmt).json()["balance"] == 1_000_000
    assert gw.http.get("/v1/billing/history", headers=b_mgmt).json()["data"][0]["credits"] == 1_000_000
    # The victim's key still works, and its own usage is there.
    mine = gw.http.get("/v1/usage/daily", headers=auth(a["management_key"])).json()["data"]
    assert [(r["account_id"], r["key_prefix"], r["requests"]) for r in mine] == [(a["id"], prefix, 1)]
    across = gw.http.get("/v1/admin/usage", params={"account": a["id"]}, headers=_op(gw)).json()["data"]
    assert across == mine


def test_first_start_after_an_upgrade_makes_one_operator_key(tmp_path: Path) -> None:
    from gatewright.settings import Settings
    from gatewright.wiring import bootstrap, ensure_operator_key

    settings = Settings(data_dir=tmp_path, catalog=Path(__file__).parents[1] / "fixtures" / "catalogs" / "fake.toml")
    first = on_app_loop(bootstrap(settings))
    assert first is not None and first.operator_key.startswith("gwo-")
    assert on_app_loop(ensure_operator_key(settings)) is None  # one exists: nothing new


def test_a_single_account_store_from_before_is_carried_forward(tmp_path: Path) -> None:
    """A store at migration 0003 with its account and keys: after the upgrade its keys work, and
    the first start makes the first operator key."""
    import sqlite3

    import sqlalchemy
    from alembic import command

    from gatewright.core.keys import hash_key
    from gatewright.settings import Settings
    from gatewright.store.db import alembic_config
    from gatewright.wiring import ensure_operator_key

    db = tmp_path / "gatewright.db"
    config = alembic_config(f"sqlite:///{db}")
    with sqlalchemy.create_engine(f"sqlite:///{db}").begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0003")
    legacy = "ab" * 16  # a key from before key markers, too
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO accounts (name, balance, reserved, low_balance_threshold, created_at, updated_at) "
            "VALUES ('default', 1000000, 0, 10000, '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
        )
        conn.execute(
            "INSERT INTO api_keys (account_id, prefix, key_hash, kind, disabled, scopes, period_spent, "
            "period_reserved, month_spent, created_at, updated_at) VALUES (1, ?, ?, 'api', 0, '[\"model:chat\"]', "
            "0, 0, 0, '2026-01-01 00:00:00', '2026-01-01 00:00:00')",
            (legacy[:8], hash_key(legacy)),
        )
        conn.execute(
            "INSERT INTO usage_records (request_id, account_id, key_id, key_prefix, model, input_tokens, "
            "cached_tokens, output_tokens, reasoning_tokens, credits, usd, status, estimated, created_at) "
            "VALUES ('req_old', 1, 1, ?, 'fake', 10, 0, 5, 0, 40, 0.00002, 'ok', 0, '2026-01-02 03:04:05.000000')",
            (legacy[:8],),
        )
    settings = dict(starting_credits=0, **UNLIMITED_SETTINGS)
    catalog = Path(__file__).parents[1] / "fixtures" / "catalogs" / "fake.toml"
    operator = on_app_loop(ensure_operator_key(Settings(data_dir=tmp_path, catalog=catalog)))
    assert operator is not None and operator.startswith("gwo-")
    with app_gateway(tmp_path, **settings) as upgraded:
        assert upgraded.api_key is None  # not a first start: no new account or keys
        answer = upgraded.http.post("/v1/chat/completions", json=chat_body(), headers=auth(legacy))
        assert answer.status_code == 200, answer.text
        accounts = upgraded.http.get("/v1/admin/accounts", headers=auth(operator)).json()["data"]
        assert [(a["id"], a["name"], a["disabled"]) for a in accounts] == [(1, "default", False)]
        # The usage stored before the upgrade is in the usage by day (migration 0005 summed it).
        days = upgraded.http.get("/v1/admin/usage", params={"since": "2026-01-01"}, headers=auth(operator)).json()
        assert days["data"][-1] == {
            "day": "2026-01-02",
            "account_id": 1,
            "model": "fake",
            "key_prefix": legacy[:8],
            "requests": 1,
            "input_tokens": 10,
            "output_tokens": 5,
            "credits": 40,
            "usd": 0.00002,
        }


def test_stored_responses_and_tasks_stay_in_their_account(gw: AppGateway) -> None:
    a, b = _new_account(gw, "owner"), _new_account(gw, "guesser")
    a_key = _api_key(gw, a["management_key"], scopes=["model:chat", "model:responses"])["key"]
    b_key = _api_key(gw, b["management_key"], scopes=["model:chat", "model:responses"])["key"]
    made = gw.http.post("/v1/responses", json={"model": "fake", "input": "hi", "store": True}, headers=auth(a_key))
    assert made.status_code == 200, made.text
    rid = made.json()["id"]
    assert gw.http.get(f"/v1/responses/{rid}", headers=auth(a_key)).status_code == 200
    for method, path in (("GET", rid), ("GET", f"{rid}/input_items"), ("DELETE", rid)):
        assert gw.http.request(method, f"/v1/responses/{path}", headers=auth(b_key)).status_code == 404
    follow = gw.http.post(
        "/v1/responses", json={"model": "fake", "input": "more", "previous_response_id": rid}, headers=auth(b_key)
    )
    assert_error(follow, 400, "previous_response_not_found")  # as for an id that never existed
    assert gw.http.get(f"/v1/responses/{rid}", headers=auth(a_key)).status_code == 200  # still there
    task = {
        "taskType": "textInference",
        "taskUUID": "5b0f0b4e-8c9e-4c54-9a43-6f1a2f0c1d11",
        "model": "fake",
        "messages": [{"role": "user", "content": "secret"}],
    }
    assert gw.http.post("/v1/tasks", json=[task], headers=auth(a_key)).status_code == 200
    stolen = gw.http.post("/v1/tasks", json=[task], headers=auth(b_key))
    # An identical task from another account is not "the same task": no results, a conflict.
    assert stolen.status_code == 409 and stolen.json()["errors"][0]["code"] == "conflictTaskUUID"
    assert "data" not in stolen.json()


def test_another_accounts_task_results_and_webhook_state_stay_hidden(gw: AppGateway) -> None:
    """B polls A's sync and async tasks (Bearer and an authentication task, any case of the UUID) and
    resubmits A's async task: each answer is the one for a taskUUID that never existed."""
    a_key = _api_key(gw, _new_account(gw, "tasks-owner")["management_key"])["key"]
    b_key = _api_key(gw, _new_account(gw, "tasks-guesser")["management_key"])["key"]
    base = {"taskType": "textInference", "model": "fake", "messages": [{"role": "user", "content": "secret"}]}
    sync_uuid, async_uuid = "6c1e2d3f-0a4b-4c5d-8e6f-7a8b9c0d1e2f", "7d2f3e40-1b5c-4d6e-9f70-8b9cad0e1f30"
    assert gw.http.post("/v1/tasks", json=[{**base, "taskUUID": sync_uuid}], headers=auth(a_key)).status_code == 200
    with running_receiver(fail_first=0) as receiver:
        acked = gw.http.post(
            "/v1/tasks",
            json=[{**base, "taskUUID": async_uuid, "deliveryMethod": "async", "webhookURL": receiver.url}],
            headers=auth(a_key),
        )
        assert acked.status_code == 200, acked.text
        receiver.wait_for(1)

    def poll(key: str, uuid: str, in_body: bool) -> httpx.Response:
        tasks: list[dict[str, Any]] = [{"taskType": "getResponse", "taskUUID": uuid}]
        if in_body:
            return gw.http.post("/v1/tasks", json=[{"taskType": "authentication", "apiKey": key}, *tasks])
        return gw.http.post("/v1/tasks", json=tasks, headers=auth(key))

    deadline = time.monotonic() + 30
    while (owner := poll(a_key, async_uuid, False).json()["data"][0]).get("webhook", {}).get("state") != "delivered":
        assert time.monotonic() < deadline, owner
        time.sleep(0.05)
    assert owner["text"]  # A sees its result and its webhook's state
    assert poll(a_key, sync_uuid, True).json()["data"][0]["text"]
    never = poll(b_key, "00000000-0000-4000-8000-000000000000", False)
    assert never.status_code == 404
    for uuid in (sync_uuid, async_uuid, async_uuid.upper()):
        for in_body in (False, True):
            stolen = poll(b_key, uuid, in_body)
            assert stolen.status_code == 404, stolen.text
            body = stolen.json()
            assert "data" not in body and "secret" not in stolen.text and "webhook" not in stolen.text
            assert (
                [e["code"] for e in body["errors"]] == [e["code"] for e in never.json()["errors"]] == ["taskNotFound"]
            )
    resubmitted = gw.http.post(
        "/v1/tasks", json=[{**base, "taskUUID": async_uuid, "deliveryMethod": "async"}], headers=auth(b_key)
    )
    assert resubmitted.status_code == 409 and "data" not in resubmitted.json() and "webhook" not in resubmitted.text
    assert resubmitted.json()["errors"][0]["code"] == "conflictTaskUUID"
