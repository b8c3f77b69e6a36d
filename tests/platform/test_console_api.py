"""What the web console reads through the public API besides tokens and credits: each usage
record's dialect and latency (written by the settlement that writes the record), each key's last
use (carried by the ledger's write of the key's row), records from before they were kept reading
as null, and each model's deployments with whether each is up."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from alembic import command
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from gatewright.api.platform.views import usage_object
from gatewright.core.accounts import UsageFilter
from gatewright.core.sessions import SessionRow
from gatewright.store.accounts import SqlAccountStore
from gatewright.store.console_sessions import SqlSessionStore
from gatewright.store.db import alembic_config, create_engine, migrate
from gatewright.store.tables import accounts, usage_records
from tests.platform.wire import auth
from tests.support.app import AppGateway, app_gateway

SLOW_DELAY_S = 0.2  # tests/fixtures/catalogs/fake.toml: the "slow" model waits this long per token


def _new_key(gw: AppGateway, **body: object) -> tuple[str, str]:
    made = gw.http.post(
        "/v1/keys", json={"scopes": ["model:chat", "model:responses"], **body}, headers=auth(gw.management_key)
    )
    assert made.status_code == 200, made.text
    data = made.json()["data"]
    return data["key"], data["prefix"]


def _usage(gw: AppGateway, **query: str) -> list[dict[str, object]]:
    page = gw.http.get("/v1/billing/usage", params=query, headers=auth(gw.management_key))
    assert page.status_code == 200, page.text
    rows: list[dict[str, object]] = page.json()["data"]
    return rows


def test_each_record_names_its_dialect_and_how_long_the_answer_took(platform_gateway: AppGateway) -> None:
    gw = platform_gateway
    key, prefix = _new_key(gw, name="dialects")
    words = "one two three"
    chat = gw.openai(key).chat.completions.with_raw_response.create(
        model="slow", messages=[{"role": "user", "content": words}]
    )
    messages = gw.anthropic(key).messages.with_raw_response.create(
        model="echo", max_tokens=16, messages=[{"role": "user", "content": "hello"}]
    )
    responses = gw.openai(key).responses.with_raw_response.create(model="echo", input="hello")
    task_uuid = str(uuid.uuid4())
    task = {
        "taskType": "textInference",
        "taskUUID": task_uuid,
        "model": "echo",
        "messages": [{"role": "user", "content": "hi"}],
    }
    assert gw.http.post("/v1/tasks", json=[task], headers=auth(key)).status_code == 200

    rows = {str(r["request_id"]): r for r in _usage(gw, key=prefix)}
    assert rows[chat.headers["x-request-id"]]["dialect"] == "openai"
    assert rows[messages.headers["x-request-id"]]["dialect"] == "anthropic"
    assert rows[responses.headers["x-request-id"]]["dialect"] == "openai-responses"
    (task_row,) = [r for r in rows.values() if str(r["request_id"]).startswith(f"task_{task_uuid}")]
    assert task_row["dialect"] == "task-api"
    # The slow model sleeps before each of its 3 tokens: the latency covers the whole answer.
    slow = rows[chat.headers["x-request-id"]]
    assert slow["output_tokens"] == 3 and int(str(slow["latency_ms"])) >= 3 * SLOW_DELAY_S * 1000
    assert all(isinstance(r["latency_ms"], int) and r["latency_ms"] >= 0 for r in rows.values())

    # The log filters by dialect; a dialect that does not exist is a 400 naming the parameter.
    only = _usage(gw, key=prefix, dialect="anthropic")
    assert [r["request_id"] for r in only] == [messages.headers["x-request-id"]]
    bad = gw.http.get("/v1/billing/usage", params={"dialect": "soap"}, headers=auth(gw.management_key))
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "dialect"


def test_a_keys_last_use_is_set_by_its_billed_requests(platform_gateway: AppGateway) -> None:
    gw = platform_gateway
    key, prefix = _new_key(gw, name="last-used")

    def listed() -> dict[str, object]:
        keys = gw.http.get("/v1/keys", headers=auth(gw.management_key)).json()["data"]
        found: dict[str, object] = next(k for k in keys if k["prefix"] == prefix)
        return found

    assert listed()["last_used_at"] is None  # never used
    before = datetime.now(UTC)
    gw.openai(key).chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}])
    first = datetime.fromisoformat(str(listed()["last_used_at"]))
    assert first >= before.replace(microsecond=before.microsecond // 1000 * 1000)
    gw.openai(key).chat.completions.create(model="echo", messages=[{"role": "user", "content": "again"}])
    assert datetime.fromisoformat(str(listed()["last_used_at"])) > first  # moved on with the new request
    # The key reads its own last use too.
    assert gw.http.get("/v1/key", headers=auth(key)).json()["data"]["last_used_at"] is not None


async def test_records_from_before_migration_0006_read_as_null(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    engine: AsyncEngine = create_engine(url)
    try:

        def old_schema(connection: object) -> None:
            config = alembic_config(url)
            config.attributes["connection"] = connection
            command.upgrade(config, "0005")

        async with engine.begin() as conn:
            await conn.run_sync(old_schema)
            now = datetime.now(UTC)
            await conn.execute(
                insert(accounts).values(name="old", balance=0, reserved=0, created_at=now, updated_at=now)
            )
            old = {  # the columns of a usage record before migration 0006
                "request_id": "req-old",
                "account_id": 1,
                "key_id": 1,
                "key_prefix": "abcd1234",
                "model": "echo",
                "input_tokens": 3,
                "cached_tokens": 0,
                "output_tokens": 2,
                "reasoning_tokens": 0,
                "credits": 14,
                "usd": 0.000007,
                "status": "ok",
                "estimated": False,
                "created_at": now,
            }
            await conn.execute(insert(usage_records).values(old))
        await migrate(engine)
        (record,) = await SqlAccountStore(engine).usage(1, UsageFilter())
        shown = usage_object(record)
        assert (shown["request_id"], shown["dialect"], shown["latency_ms"]) == ("req-old", None, None)
        assert shown["credits"] == 14
    finally:
        await engine.dispose()


def test_models_list_their_deployments_and_whether_each_is_up(tmp_path: Path) -> None:
    with app_gateway(tmp_path) as gw:  # its own gateway: the breaker opened here stays here
        plain = gw.http.get("/v1/models").json()["data"]
        assert all("deployments" not in m for m in plain)  # only when asked for
        for _ in range(3):  # fake.toml: "broken" fails with a 500; three failures in a row open its breaker
            failed = gw.http.post(
                "/v1/chat/completions",
                json={"model": "broken", "messages": [{"role": "user", "content": "hi"}]},
                headers=auth(gw.api_key),
            )
            assert failed.status_code >= 500
        listed = gw.http.get("/v1/models", params={"deployments": "true"}, headers=auth(gw.api_key)).json()["data"]
        by_id = {m["id"]: m for m in listed}
        assert by_id["echo"]["deployments"] == [{"name": "echo", "backend": "fake", "state": "up", "up": True}]
        (broken,) = by_id["broken"]["deployments"]
        # "probing" once the breaker's 30 s cooldown is over (a very slow machine): still not "up".
        assert broken["name"] == "broken#0" and broken["state"] in ("down", "probing")
        # Names and engine kinds only: never an upstream's address or credential.
        assert all(set(d) == {"name", "backend", "state", "up"} for m in listed for d in m["deployments"])
        assert gw.http.get("/v1/models").json()["data"] == plain  # listings are shared: never changed in place
        bad = gw.http.get("/v1/models", params={"deployments": "yes"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "deployments"


def test_only_a_credential_of_the_gateway_sees_the_deployments(tmp_path: Path) -> None:
    with app_gateway(tmp_path) as gw:
        asked = {"deployments": "true"}
        # A stranger reads the public list, but not where each model runs and whether it is up.
        anonymous = gw.http.get("/v1/models", params=asked)
        assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "missing_api_key"
        wrong = gw.http.get("/v1/models", params=asked, headers=auth("gw-" + "0" * 32))
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        assert "deployments" not in gw.http.get("/v1/models").json()["data"][0]
        # Every kind of the gateway's own credential does: the console signs in with each.
        for key in (gw.api_key, gw.management_key, gw.operator_key):
            assert key is not None
            listed = gw.http.get("/v1/models", params=asked, headers=auth(key))
            assert listed.status_code == 200 and all("deployments" in m for m in listed.json()["data"])
        # A disabled key is no credential any more.
        key, prefix = _new_key(gw, name="soon-disabled")
        assert gw.http.patch(f"/v1/keys/{prefix}", json={"disabled": True}, headers=auth(gw.management_key)).is_success
        assert gw.http.get("/v1/models", params=asked, headers=auth(key)).status_code == 401


async def test_console_sessions_in_the_store_expire_and_are_deleted(engine: AsyncEngine) -> None:
    store = SqlSessionStore(engine)
    now = datetime.now(UTC)
    live = SessionRow("a" * 64, "management", "abcd1234", "sealed-key", None, now, now + timedelta(hours=8))
    old = SessionRow(
        "b" * 64, "api", "efgh5678", "sealed-old", None, now - timedelta(hours=9), now - timedelta(hours=1)
    )
    await store.insert(live)
    await store.insert(old)
    assert await store.get(live.id_hash, now) == live
    assert await store.get(old.id_hash, now) is None  # expired: never read, even before the sweep
    await store.set_playground_key(live.id_hash, "sealed-playground")
    got = await store.get(live.id_hash, now)
    assert got is not None and got.sealed_playground_key == "sealed-playground"
    assert await store.remove_expired(now) == 1
    await store.delete(live.id_hash)
    assert await store.get(live.id_hash, now) is None
