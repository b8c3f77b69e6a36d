"""The key API over HTTP against a real gateway process: every endpoint, field and error status
(003 L10455-10506, L32993-33156, L33567-33684, L43357-43428)."""

from __future__ import annotations

import re

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gatewright.core.keys import key_prefix
from tests.platform.wire import assert_error, auth, chat_body
from tests.support.accounts import accounts_on
from tests.support.app import AppGateway
from tests.support.procs import Gateway

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
KEY_FIELDS = {
    "name",
    "disabled",
    "prefix",
    "scopes",
    "limit",
    "created_at",
    "updated_at",
    "monthly_usage",
    "kind",
    "rate_limit",
    "models",  # gatewright extension: the allow-list (null: every model)
    "expires_at",  # gatewright extension
    "last_used_at",  # gatewright extension: when a request of it was last billed (null: never)
}


async def _create(http: httpx.AsyncClient, gw: Gateway, **body: object) -> dict[str, object]:
    response = await http.post("/v1/keys", json=body, headers=auth(gw.management_key))
    assert response.status_code == 200, response.text
    data: dict[str, object] = response.json()["data"]
    return data


async def test_create_key_returns_the_documented_object_and_the_key_once(
    http: httpx.AsyncClient, platform_gateway: AppGateway
) -> None:
    body = {"name": "20260202-key-for-llms", "limit": {"retention": "week", "threshold": 25}}
    data = await _create(http, platform_gateway, **body, scopes=["model:chat", "model:responses"])
    assert set(data) == KEY_FIELDS | {"key"}
    key = str(data["key"])
    assert re.fullmatch(r"gw-[0-9a-f]{32}", key) and data["prefix"] == key_prefix(key) == key[3:11]
    assert data["name"] == "20260202-key-for-llms" and data["disabled"] is False
    assert data["scopes"] == ["model:chat", "model:responses"]
    assert data["limit"] == {"retention": "week", "threshold": 25}
    assert ISO_UTC.fullmatch(str(data["created_at"])) and data["updated_at"] == data["created_at"]
    assert data["monthly_usage"] == 0 and data["kind"] == "api"

    listed = (await http.get("/v1/keys", headers=auth(platform_gateway.management_key))).json()["data"]
    mine = [k for k in listed if k["prefix"] == data["prefix"]]
    assert len(mine) == 1 and "key" not in mine[0] and set(mine[0]) == KEY_FIELDS

    chat = await http.post("/v1/chat/completions", json=chat_body(), headers=auth(key))
    assert chat.status_code == 200, chat.text


async def test_create_with_no_body_gives_a_chat_key_without_limit(
    http: httpx.AsyncClient, platform_gateway: AppGateway
) -> None:
    response = await http.post("/v1/keys", headers=auth(platform_gateway.management_key))
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert (data["name"], data["scopes"], data["limit"]) == (None, ["model:chat"], None)
    assert data["rate_limit"] == {"requests_per_minute": None, "tokens_per_minute": None}


async def test_a_limit_without_retention_never_resets(http: httpx.AsyncClient, platform_gateway: AppGateway) -> None:
    data = await _create(http, platform_gateway, limit={"threshold": 0.5})
    assert data["limit"] == {"retention": "no_reset", "threshold": 0.5}


async def test_list_is_oldest_first_and_holds_only_api_keys(
    http: httpx.AsyncClient, platform_gateway: AppGateway
) -> None:
    first = await _create(http, platform_gateway, name="first")
    second = await _create(http, platform_gateway, name="second")
    listed = (await http.get("/v1/keys", headers=auth(platform_gateway.management_key))).json()["data"]
    prefixes = [k["prefix"] for k in listed]
    assert prefixes.index(first["prefix"]) < prefixes.index(second["prefix"])
    assert platform_gateway.api_key and key_prefix(platform_gateway.api_key) == prefixes[0]  # made on first start
    assert platform_gateway.management_key and key_prefix(platform_gateway.management_key) not in prefixes
    assert {k["kind"] for k in listed} == {"api"}
    assert [k["created_at"] for k in listed] == sorted(k["created_at"] for k in listed)


async def test_get_key_describes_the_calling_key(http: httpx.AsyncClient, platform_gateway: AppGateway) -> None:
    made = await _create(http, platform_gateway, name="me", limit={"retention": "day", "threshold": 3})
    response = await http.get("/v1/key", headers=auth(str(made["key"])))
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert set(data) == KEY_FIELDS
    assert (data["prefix"], data["name"], data["limit"]) == (made["prefix"], "me", {"retention": "day", "threshold": 3})
    management = (await http.get("/v1/key", headers=auth(platform_gateway.management_key))).json()["data"]
    own = key_prefix(str(platform_gateway.management_key))
    assert management["kind"] == "management" and management["prefix"] == own


async def test_patch_updates_only_the_fields_given(http: httpx.AsyncClient, platform_gateway: AppGateway) -> None:
    made = await _create(http, platform_gateway, name="before", limit={"retention": "week", "threshold": 25})
    headers = auth(platform_gateway.management_key)
    url = f"/v1/keys/{made['prefix']}"

    renamed = (await http.patch(url, json={"name": "after"}, headers=headers)).json()["data"]
    assert (renamed["name"], renamed["limit"], renamed["disabled"]) == ("after", made["limit"], False)
    assert renamed["updated_at"] >= renamed["created_at"] and "key" not in renamed

    limited = (await http.patch(url, json={"limit": {"retention": "month", "threshold": 7.5}}, headers=headers)).json()
    assert limited["data"]["limit"] == {"retention": "month", "threshold": 7.5}
    unlimited = (await http.patch(url, json={"limit": None}, headers=headers)).json()["data"]
    assert unlimited["limit"] is None and unlimited["name"] == "after"

    scoped = (await http.patch(url, json={"scopes": ["model:tasks", "model:chat"]}, headers=headers)).json()["data"]
    assert scoped["scopes"] == ["model:tasks", "model:chat"]
    rated = await http.patch(url, json={"rate_limit": {"requests_per_minute": 30}}, headers=headers)
    assert rated.json()["data"]["rate_limit"] == {"requests_per_minute": 30, "tokens_per_minute": None}
    unchanged = (await http.patch(url, headers=headers)).json()["data"]  # an empty body changes nothing
    assert {k: v for k, v in unchanged.items() if k != "updated_at"} == {
        k: v for k, v in rated.json()["data"].items() if k != "updated_at"
    }


async def test_disabled_keys_are_refused_until_enabled(http: httpx.AsyncClient, platform_gateway: AppGateway) -> None:
    made = await _create(http, platform_gateway)
    key, url, headers = str(made["key"]), f"/v1/keys/{made['prefix']}", auth(platform_gateway.management_key)
    disabled = (await http.patch(url, json={"disabled": True}, headers=headers)).json()["data"]
    assert disabled["disabled"] is True
    assert_error(await http.post("/v1/chat/completions", json=chat_body(), headers=auth(key)), 403, "key_disabled")
    assert_error(await http.get("/v1/key", headers=auth(key)), 403, "key_disabled")
    await http.patch(url, json={"disabled": False}, headers=headers)
    assert (await http.post("/v1/chat/completions", json=chat_body(), headers=auth(key))).status_code == 200


async def test_delete_answers_as_documented_and_the_key_stops_working(
    http: httpx.AsyncClient, platform_gateway: AppGateway
) -> None:
    made = await _create(http, platform_gateway)
    key, url, headers = str(made["key"]), f"/v1/keys/{made['prefix']}", auth(platform_gateway.management_key)
    deleted = await http.delete(url, headers=headers)
    assert deleted.status_code == 200 and deleted.json() == {"data": {"prefix": made["prefix"], "deleted": True}}
    assert_error(await http.post("/v1/chat/completions", json=chat_body(), headers=auth(key)), 401, "invalid_api_key")
    listed = (await http.get("/v1/keys", headers=headers)).json()["data"]
    assert made["prefix"] not in [k["prefix"] for k in listed]
    assert_error(await http.delete(url, headers=headers), 404, "key_not_found", "prefix")
    assert_error(await http.patch(url, json={"name": "x"}, headers=headers), 404, "key_not_found", "prefix")


async def test_a_key_scoped_away_from_chat_cannot_call_chat(
    http: httpx.AsyncClient, platform_gateway: AppGateway
) -> None:
    made = await _create(http, platform_gateway, scopes=["model:responses"])
    response = await http.post("/v1/chat/completions", json=chat_body(), headers=auth(str(made["key"])))
    assert_error(response, 403, "missing_scope")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/keys"),
        ("GET", "/v1/keys"),
        ("GET", "/v1/key"),
        ("PATCH", "/v1/keys/abcdef12"),
        ("DELETE", "/v1/keys/abcdef12"),
    ],
)
async def test_missing_and_unknown_keys_get_401(http: httpx.AsyncClient, method: str, path: str) -> None:
    assert_error(await http.request(method, path), 401, "missing_api_key")
    assert_error(await http.request(method, path, headers=auth("f" * 32)), 401, "invalid_api_key")
    assert_error(await http.request(method, path, headers={"authorization": "Basic abc"}), 401, "missing_api_key")


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/keys"), ("GET", "/v1/keys"), ("PATCH", "/v1/keys/abcdef12"), ("DELETE", "/v1/keys/abcdef12")],
)
async def test_api_keys_cannot_manage_keys(
    http: httpx.AsyncClient, platform_gateway: AppGateway, method: str, path: str
) -> None:
    response = await http.request(method, path, headers=auth(platform_gateway.api_key))
    assert_error(response, 403, "management_key_required")


async def test_a_management_key_cannot_call_models(http: httpx.AsyncClient, platform_gateway: AppGateway) -> None:
    response = await http.post("/v1/chat/completions", json=chat_body(), headers=auth(platform_gateway.management_key))
    assert_error(response, 403, "api_key_required")


async def test_management_keys_are_not_managed_through_the_api(
    http: httpx.AsyncClient, platform_gateway: AppGateway
) -> None:
    own = key_prefix(str(platform_gateway.management_key))
    headers = auth(platform_gateway.management_key)
    assert_error(await http.patch(f"/v1/keys/{own}", json={"disabled": True}, headers=headers), 404, "key_not_found")
    assert_error(await http.delete(f"/v1/keys/{own}", headers=headers), 404, "key_not_found")
    assert (await http.get("/v1/keys", headers=headers)).status_code == 200  # still enabled


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"limit": {"retention": "fortnight", "threshold": 5}}, "limit.retention"),
        ({"limit": {"retention": "week", "threshold": -1}}, "limit.threshold"),
        ({"limit": {"retention": "week"}}, "limit.threshold"),
        ({"limit": {"retention": "week", "threshold": "lots"}}, "limit.threshold"),
        ({"scopes": ["model:everything"]}, "scopes"),
        ({"scopes": []}, "scopes"),
        ({"scopes": "model:chat"}, "scopes"),
        ({"name": "x" * 201}, "name"),
        ({"nmae": "typo"}, "nmae"),
        ({"rate_limit": {"requests_per_minute": 0}}, "rate_limit.requests_per_minute"),
    ],
)
async def test_invalid_create_bodies_get_400_naming_the_param(
    http: httpx.AsyncClient, platform_gateway: AppGateway, body: dict[str, object], param: str
) -> None:
    response = await http.post("/v1/keys", json=body, headers=auth(platform_gateway.management_key))
    assert_error(response, 400, param=param)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"disabled": "yes"}, "disabled"),
        ({"disabled": None}, "disabled"),
        ({"disabeld": True}, "disabeld"),
        ({"limit": {"retention": "year", "threshold": 1}}, "limit.retention"),
    ],
)
async def test_invalid_patch_bodies_get_400_naming_the_param(
    http: httpx.AsyncClient, platform_gateway: AppGateway, body: dict[str, object], param: str
) -> None:
    prefix = key_prefix(str(platform_gateway.api_key))
    response = await http.patch(f"/v1/keys/{prefix}", json=body, headers=auth(platform_gateway.management_key))
    assert_error(response, 400, param=param)
    listed = (await http.get("/v1/keys", headers=auth(platform_gateway.management_key))).json()["data"]
    assert next(k for k in listed if k["prefix"] == prefix)["disabled"] is False  # nothing changed


async def test_malformed_json_and_prefix_get_400(http: httpx.AsyncClient, platform_gateway: AppGateway) -> None:
    headers = {**auth(platform_gateway.management_key), "content-type": "application/json"}
    assert_error(await http.post("/v1/keys", content=b'{"name": ', headers=headers), 400, "invalid_json")
    assert_error(await http.post("/v1/keys", content=b"[1, 2]", headers=headers), 400)
    assert_error(await http.patch("/v1/keys/not-a-prefix", json={}, headers=headers), 400, "invalid_prefix", "prefix")
    assert_error(await http.delete("/v1/keys/ABCDEF12", headers=headers), 400, "invalid_prefix", "prefix")


async def test_another_accounts_keys_are_invisible(
    http: httpx.AsyncClient, platform_gateway: AppGateway, store: AsyncEngine
) -> None:
    async with accounts_on(store) as accounts:
        other = await accounts.create_account("other", 1_000)
        their_management = await accounts.create_key(other, "management", scopes=[])
        their_key = await accounts.create_key(other, "api", name="theirs")
    ours = auth(platform_gateway.management_key)
    theirs = auth(their_management.key)
    url = f"/v1/keys/{their_key.row.prefix}"
    assert_error(await http.patch(url, json={"disabled": True}, headers=ours), 404, "key_not_found")
    assert_error(await http.delete(url, headers=ours), 404, "key_not_found")
    our_list = (await http.get("/v1/keys", headers=ours)).json()["data"]
    their_list = (await http.get("/v1/keys", headers=theirs)).json()["data"]
    assert their_key.row.prefix not in [k["prefix"] for k in our_list]
    assert [k["prefix"] for k in their_list] == [their_key.row.prefix]
    balance = (await http.get("/v1/billing/balance", headers=auth(their_key.key))).json()
    assert balance["balance"] == 1_000
