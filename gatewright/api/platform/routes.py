"""The key and billing APIs (003 L1338-1393, L10338-10511, L32956-33156, L33567-33684, L43357-43428).

Who may call what:

- a **management key** manages the account's API keys (``/v1/keys``, ``/v1/keys/{prefix}``),
  redeems codes (``POST /v1/billing/redeem``) and reads everything (the billing history, usage by
  day); it cannot add credits: only the operator grants them (``api.platform.admin``);
- **any key** of the account reads the balance (``/v1/billing/balance``, ``/v2/billing``,
  ``/v2/billing/detail``), as in the reference, and ``GET /v1/key`` (the calling key itself);
- ``GET /v1/billing/usage`` lists the account's requests for a management key, and only the
  calling key's own requests for an API key.

Errors use OpenAI's error object; with the platform off (``--bare``) these paths answer 404.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from gatewright.api.http import JSONResponse, bearer, invalid_from, parse
from gatewright.api.openai.errors import error_body
from gatewright.api.openapi import Operation, routes_of
from gatewright.api.platform import schemas, views
from gatewright.core.accounts import Accounts, KeyLimit, UsageFilter
from gatewright.core.clock import iso, utcnow
from gatewright.core.errors import GatewrightError, InvalidRequest, NotFound, PermissionDenied
from gatewright.core.platform import KeyKind, Principal

Handler = Callable[[Request], Awaitable[Response]]
Q = TypeVar("Q", bound=BaseModel)
_PREFIX = re.compile(r"[0-9a-f]{8}")


def _accounts(request: Request) -> Accounts:
    accounts: Accounts | None = getattr(request.app.state, "accounts", None)
    if accounts is None or accounts.authenticator is None:
        raise NotFound(
            "The platform layer is off (the gateway runs with --bare): there are no keys or billing.",
            code="platform_disabled",
        )
    return accounts


async def _caller(request: Request, kind: KeyKind | None) -> tuple[Accounts, Principal]:
    accounts = _accounts(request)
    assert accounts.authenticator is not None  # checked by _accounts
    # Fresh: these routes reserve no credits, so only a store read refuses a key disabled elsewhere.
    return accounts, await accounts.authenticator.authenticate_as(bearer(request), kind, fresh=True)


async def _settled(request: Request) -> None:
    """Let this process's queued charges land first, so a read after a response includes it."""
    platform = request.app.state.gateway.platform
    if platform is not None:
        await platform.ledger.flush()


def _endpoint(handler: Handler) -> Handler:
    """Render a GatewrightError the handler raises as OpenAI's error object."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except GatewrightError as error:
            return JSONResponse(error_body(error), status_code=error.status)

    return endpoint


async def _body(request: Request) -> bytes:
    body = await request.body()
    return body if body.strip() else b"{}"  # every field of these bodies is optional


def _prefix(request: Request) -> str:
    prefix: str = request.path_params["prefix"]
    if not _PREFIX.fullmatch(prefix):
        raise InvalidRequest(
            f"Invalid key prefix '{prefix[:40]}': a prefix is the first 8 characters of a key (hex).",
            param="prefix",
            code="invalid_prefix",
        )
    return prefix


def _limit(body: schemas.KeyLimitBody | None) -> KeyLimit | None:
    return KeyLimit(body.retention, body.threshold) if body is not None else None


def _models(request: Request, models: list[str] | None) -> list[str] | None:
    """An allow-list names models the catalog has (ids or aliases); an empty one would be a key
    that can call nothing."""
    if models is None:
        return None
    if not models:
        raise InvalidRequest("Invalid 'models': name at least one model, or send null for all.", param="models")
    catalog = request.app.state.gateway.catalog
    for i, name in enumerate(models):
        if catalog.find(name) is None:
            raise InvalidRequest(f"Unknown model '{name[:200]}'; GET /v1/models lists them.", param=f"models[{i}]")
    return models


def _expiry(stamp: int | None) -> datetime | None:
    return None if stamp is None else datetime.fromtimestamp(stamp, UTC)


def _scopes(scopes: list[str] | None) -> list[str]:
    # An API key's scopes say what it may call: an empty list would be read as "everything".
    if not scopes:
        raise InvalidRequest("Invalid 'scopes': name at least one scope, e.g. [\"model:chat\"].", param="scopes")
    return list(dict.fromkeys(scopes))


# -- keys ----------------------------------------------------------------------------------------


async def create_key(request: Request) -> Response:
    accounts, caller = await _caller(request, "management")
    body = parse(schemas.KeyCreate, await _body(request))
    rate = body.rate_limit or schemas.RateLimitBody()
    made = await accounts.create_key(
        caller.account_id,
        "api",
        name=body.name,
        scopes=_scopes(body.scopes) if "scopes" in body.model_fields_set else None,
        limit=_limit(body.limit),
        requests_per_minute=rate.requests_per_minute,
        tokens_per_minute=rate.tokens_per_minute,
        models=_models(request, body.models),
        expires_at=_expiry(body.expires_at),
    )
    return JSONResponse({"data": views.key_object(made.row, utcnow(), key=made.key)})


async def list_keys(request: Request) -> Response:
    accounts, caller = await _caller(request, "management")
    await _settled(request)
    now = utcnow()
    rows = await accounts.keys(caller.account_id, kind="api")
    return JSONResponse({"data": [views.key_object(row, now) for row in rows]})


async def current_key(request: Request) -> Response:
    accounts, caller = await _caller(request, None)
    await _settled(request)
    row = await accounts.key(caller.prefix, caller.account_id)
    return JSONResponse({"data": views.key_object(row, utcnow())})


async def update_key(request: Request) -> Response:
    accounts, caller = await _caller(request, "management")
    prefix = _prefix(request)
    body = parse(schemas.KeyUpdate, await _body(request))
    changes: dict[str, Any] = {}
    for field in ("name", "disabled"):
        if field in body.model_fields_set:
            changes[field] = getattr(body, field)
    if changes.get("disabled", False) is None:
        raise InvalidRequest("Invalid 'disabled': must be true or false.", param="disabled")
    if "scopes" in body.model_fields_set:
        changes["scopes"] = _scopes(body.scopes)
    if "limit" in body.model_fields_set:
        changes["limit"] = _limit(body.limit)
    if body.rate_limit is not None:
        for field in body.rate_limit.model_fields_set:
            changes[field] = getattr(body.rate_limit, field)
    if "models" in body.model_fields_set:
        changes["models"] = _models(request, body.models)
    if "expires_at" in body.model_fields_set:
        changes["expires_at"] = _expiry(body.expires_at)
    row = await accounts.update_key(prefix, caller.account_id, changes, kind="api")
    return JSONResponse({"data": views.key_object(row, utcnow())})


async def delete_key(request: Request) -> Response:
    accounts, caller = await _caller(request, "management")
    prefix = _prefix(request)
    await accounts.delete_key(prefix, caller.account_id, kind="api")
    return JSONResponse({"data": {"prefix": prefix, "deleted": True}})


# -- billing -------------------------------------------------------------------------------------


async def balance(request: Request) -> Response:
    accounts, caller = await _caller(request, None)
    await _settled(request)
    return JSONResponse(views.balance_object(await accounts.account(caller.account_id), utcnow()))


async def billing(request: Request) -> Response:
    accounts, caller = await _caller(request, None)
    await _settled(request)
    return JSONResponse(views.billing_object(await accounts.account(caller.account_id)))


async def billing_detail(request: Request) -> Response:
    accounts, caller = await _caller(request, None)
    await _settled(request)
    return JSONResponse(views.billing_detail_object(await accounts.account(caller.account_id)))


async def redeem(request: Request) -> Response:
    """Spend a redemption code for the caller's account (each code pays out once)."""
    accounts, caller = await _caller(request, "management")
    body = parse(schemas.RedeemBody, await _body(request))
    added = await accounts.redeem(caller.account_id, body.code, actor=f"key:{caller.prefix}")
    account = await accounts.account(caller.account_id)
    return JSONResponse({"credits_added": added, **views.balance_object(account, utcnow())})


async def history(request: Request) -> Response:
    """The account's balance changes, newest first: grants (with who), redemptions, charges."""
    accounts, caller = await _caller(request, "management")
    await _settled(request)
    query = _query(schemas.PageQuery, request)
    entries = await accounts.ledger_entries(caller.account_id, query.limit, query.after)
    return JSONResponse(views.page([views.ledger_object(entry) for entry in entries], query.limit))


async def daily_usage(request: Request) -> Response:
    """The account's usage by day, model and key (for a chart)."""
    accounts, caller = await _caller(request, "management")
    await _settled(request)
    query = _query(schemas.DailyUsageQuery, request)
    if query.account is not None and query.account != caller.account_id:
        raise NotFound(f"No account {query.account}.", param="account")
    return JSONResponse(await daily_page(accounts, caller.account_id, query))


async def daily_page(accounts: Accounts, account_id: int | None, query: schemas.DailyUsageQuery) -> dict[str, Any]:
    until = _utc(query.until) or utcnow()
    since = _utc(query.since) or until - timedelta(days=30)
    rows = await accounts.usage_daily(account_id, since, until, query.limit + 1, query.offset)
    return {
        "object": "list",
        "since": iso(since),
        "until": iso(until),
        "data": [views.bucket_object(row) for row in rows[: query.limit]],
        "has_more": len(rows) > query.limit,
        "next_offset": query.offset + query.limit if len(rows) > query.limit else None,
    }


def _query(model: type[Q], request: Request) -> Q:
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError as error:
        raise invalid_from(error) from None


def _usage_query(request: Request) -> schemas.UsageQuery:
    return _query(schemas.UsageQuery, request)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


async def usage(request: Request) -> Response:
    accounts, caller = await _caller(request, None)
    await _settled(request)
    query = _usage_query(request)
    key = query.key
    if caller.kind == "api":
        if key is not None and key != caller.prefix:
            raise PermissionDenied(
                "An API key can list only its own usage; use the management key for other keys.",
                param="key",
                code="management_key_required",
            )
        key = caller.prefix
    model = query.model
    if model is not None:
        entry = request.app.state.gateway.catalog.find(model)
        model = entry.id if entry is not None else model  # aliases list the canonical id's records
    flt = UsageFilter(
        since=_utc(query.since),
        until=_utc(query.until),
        model=model,
        key_prefix=key,
        status=query.status,
        dialect=query.dialect,
        limit=query.limit + 1,  # one more tells whether another page follows
        after_id=query.after,
    )
    rows = await accounts.usage(caller.account_id, flt)
    page = rows[: query.limit]
    totals = await accounts.usage_totals(caller.account_id, flt)
    return JSONResponse(
        {
            "object": "list",
            "data": [views.usage_object(row) for row in page],
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
            "has_more": len(rows) > query.limit,
            "totals": views.totals_object(totals),  # over every page of this filter
        }
    )


_MANAGEMENT = ("managementKey",)
_ANY_KEY = ("apiKey", "managementKey")


def _op(method: str, path: str, handler: Handler, summary: str, **kwargs: Any) -> Operation:
    return Operation(method, path, _endpoint(handler), summary, "openai", tags=("platform",), **kwargs)


operations = [
    _op(
        "POST",
        "/v1/keys",
        create_key,
        "Create an API key (the secret is in this answer only).",
        body=schemas.KeyCreate,
        security=_MANAGEMENT,
        example={"name": "ci", "scopes": ["model:chat"], "limit": {"retention": "month", "threshold": 5.0}},
    ),
    _op("GET", "/v1/keys", list_keys, "List the account's API keys.", security=_MANAGEMENT),
    _op("GET", "/v1/key", current_key, "The calling key.", security=_ANY_KEY),
    _op(
        "PATCH",
        "/v1/keys/{prefix}",
        update_key,
        "Change an API key (only the fields given).",
        body=schemas.KeyUpdate,
        security=_MANAGEMENT,
        example={"name": "renamed", "disabled": False, "rate_limit": {"requests_per_minute": 60}},
    ),
    _op("DELETE", "/v1/keys/{prefix}", delete_key, "Delete an API key.", security=_MANAGEMENT),
    _op("GET", "/v1/billing/balance", balance, "The account's balance in credits.", security=_ANY_KEY),
    _op("GET", "/v2/billing", billing, "The account's balance in USD.", security=_ANY_KEY),
    _op("GET", "/v2/billing/detail", billing_detail, "The balance with its parts.", security=_ANY_KEY),
    _op(
        "POST",
        "/v1/billing/redeem",
        redeem,
        "Redeem a code from the operator: its credits are added to the account, once.",
        body=schemas.RedeemBody,
        security=_MANAGEMENT,
        example={"code": "gwr-00000000000000000000000000000000"},
    ),
    _op(
        "GET",
        "/v1/billing/history",
        history,
        "The account's balance changes, newest first (grants with who, redemptions, charges).",
        query=schemas.PageQuery,
        security=_MANAGEMENT,
    ),
    _op(
        "GET",
        "/v1/usage/daily",
        daily_usage,
        "The account's usage by day (UTC), model and key.",
        query=schemas.DailyUsageQuery,
        security=_MANAGEMENT,
    ),
    _op(
        "GET",
        "/v1/billing/usage",
        usage,
        "The account's requests, newest first, with totals.",
        query=schemas.UsageQuery,
        security=_ANY_KEY,
    ),
]
routes: list[BaseRoute] = routes_of(operations)
