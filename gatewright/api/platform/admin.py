"""The operator's API (``/v1/admin/…``, gatewright extension): accounts, credits, redemption codes
and usage across accounts. Only the operator's credential (``gwo-…``, made at first start or with
``gatewright operator create-key``) is accepted here; an account's keys get 403, and the operator's
credential gets 403 on every model and account route. Errors use OpenAI's error object.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from gatewright.api.http import JSONResponse, bearer, parse
from gatewright.api.openapi import Operation, routes_of
from gatewright.api.platform import schemas, views
from gatewright.api.platform.routes import Handler, _accounts, _body, _endpoint, _query, _settled, daily_page
from gatewright.core.accounts import Accounts
from gatewright.core.billing import usd_to_credits
from gatewright.core.errors import InvalidRequest

_ID = re.compile(r"[1-9][0-9]{0,17}")


async def _operator(request: Request) -> tuple[Accounts, str]:
    """The accounts, and who is acting (``operator:<prefix>``, written into ledger entries)."""
    accounts = _accounts(request)
    assert accounts.authenticator is not None  # checked by _accounts
    record = await accounts.authenticator.operator(bearer(request))
    return accounts, f"operator:{record.prefix}"


def _account_id(request: Request) -> int:
    given: str = request.path_params["account_id"]
    if not _ID.fullmatch(given):
        raise InvalidRequest(f"Invalid account id '{given[:40]}': a positive integer.", param="account_id")
    return int(given)


def _credits(credits: int | None, usd: float | None) -> int:
    if (credits is None) == (usd is None):
        raise InvalidRequest("Give exactly one of 'credits' or 'usd'.", param="credits", code="invalid_value")
    return credits if credits is not None else usd_to_credits(usd or 0.0)


# -- accounts ------------------------------------------------------------------------------------


async def create_account(request: Request) -> Response:
    """A new account with its first management key (shown in this answer only)."""
    accounts, actor = await _operator(request)
    body = parse(schemas.AccountCreate, await _body(request))
    account_id = await accounts.create_account(body.name, body.credits, email=body.email, actor=actor)
    made = await accounts.create_key(account_id, "management", name="management", scopes=[])
    account = await accounts.account(account_id)
    return JSONResponse({**views.account_object(account), "management_key": made.key})


async def list_accounts(request: Request) -> Response:
    accounts, _ = await _operator(request)
    await _settled(request)
    rows = await accounts.accounts()
    return JSONResponse({"object": "list", "data": [views.account_object(row) for row in rows]})


async def get_account(request: Request) -> Response:
    accounts, _ = await _operator(request)
    await _settled(request)
    account_id = _account_id(request)
    row = next((a for a in await accounts.accounts() if a.id == account_id), None)
    if row is None:
        await accounts.account(account_id)  # raises NotFound
    return JSONResponse(views.account_object(row))


async def update_account(request: Request) -> Response:
    accounts, _ = await _operator(request)
    account_id = _account_id(request)
    body = parse(schemas.AccountUpdate, await _body(request))
    changes = {field: getattr(body, field) for field in body.model_fields_set}
    for field in ("name", "disabled"):
        if field in changes and changes[field] is None:
            raise InvalidRequest(f"Invalid '{field}': must not be null.", param=field)
    row = await accounts.update_account(account_id, changes)
    return JSONResponse(views.account_object(row))


async def delete_account(request: Request) -> Response:
    accounts, _ = await _operator(request)
    account_id = _account_id(request)
    await accounts.delete_account(account_id)
    return JSONResponse({"id": account_id, "object": "account", "deleted": True})


async def grant(request: Request) -> Response:
    """Add (or, negative, remove) credits: one ledger entry with who, when and the note."""
    accounts, actor = await _operator(request)
    account_id = _account_id(request)
    body = parse(schemas.CreditsBody, await _body(request))
    credits = _credits(body.credits, body.usd)
    await accounts.add_credits(account_id, credits, body.note or "granted by the operator", actor)
    account = await accounts.account(account_id)
    return JSONResponse({"credits_added": credits, **views.account_object(account)})


async def account_history(request: Request) -> Response:
    accounts, _ = await _operator(request)
    await _settled(request)
    account_id = _account_id(request)
    await accounts.account(account_id)
    query = _query(schemas.PageQuery, request)
    entries = await accounts.ledger_entries(account_id, query.limit, query.after)
    return JSONResponse(views.page([views.ledger_object(entry) for entry in entries], query.limit))


# -- redemption codes ----------------------------------------------------------------------------


async def mint_codes(request: Request) -> Response:
    accounts, actor = await _operator(request)
    body = parse(schemas.CodesCreate, await _body(request))
    credits = _credits(body.credits, body.usd)
    expires = datetime.fromtimestamp(body.expires_at, UTC) if body.expires_at is not None else None
    made = await accounts.mint_codes(credits, body.count, expires, body.note, actor)
    return JSONResponse({"object": "list", "data": [views.code_object(new.row, new.code) for new in made]})


async def list_codes(request: Request) -> Response:
    accounts, _ = await _operator(request)
    query = _query(schemas.PageQuery, request)
    rows = await accounts.codes(query.limit, query.after)
    return JSONResponse(views.page([views.code_object(row) for row in rows], query.limit))


# -- usage ---------------------------------------------------------------------------------------


async def usage(request: Request) -> Response:
    """Usage by day, model and key across accounts (``?account=`` narrows it to one)."""
    accounts, _ = await _operator(request)
    await _settled(request)
    query = _query(schemas.DailyUsageQuery, request)
    return JSONResponse(await daily_page(accounts, query.account, query))


_OPERATOR = ("operatorKey",)


def _op(method: str, path: str, handler: Handler, summary: str, **kwargs: Any) -> Operation:
    return Operation(method, path, _endpoint(handler), summary, "openai", tags=("admin",), security=_OPERATOR, **kwargs)


operations = [
    _op(
        "POST",
        "/v1/admin/accounts",
        create_account,
        "Create an account (and its first management key, shown once).",
        body=schemas.AccountCreate,
        example={"name": "team-a", "email": "a@example.com", "credits": 2_000_000},
    ),
    _op("GET", "/v1/admin/accounts", list_accounts, "List accounts with balance, reserved and spend."),
    _op("GET", "/v1/admin/accounts/{account_id}", get_account, "One account."),
    _op(
        "PATCH",
        "/v1/admin/accounts/{account_id}",
        update_account,
        "Rename, change the email of, disable or enable an account.",
        body=schemas.AccountUpdate,
        example={"name": "team-a", "disabled": False},
    ),
    _op("DELETE", "/v1/admin/accounts/{account_id}", delete_account, "Delete an account (nothing reserved)."),
    _op(
        "POST",
        "/v1/admin/accounts/{account_id}/credits",
        grant,
        "Grant (or, negative, remove) credits: a ledger entry with who and a note.",
        body=schemas.CreditsBody,
        example={"usd": 5.0, "note": "invoice 17"},
    ),
    _op(
        "GET",
        "/v1/admin/accounts/{account_id}/history",
        account_history,
        "The account's balance changes, newest first.",
        query=schemas.PageQuery,
    ),
    _op(
        "POST",
        "/v1/admin/codes",
        mint_codes,
        "Mint redemption codes (the codes are in this answer only).",
        body=schemas.CodesCreate,
        example={"usd": 10.0, "count": 2, "note": "workshop"},
    ),
    _op("GET", "/v1/admin/codes", list_codes, "Redemption codes, newest first.", query=schemas.PageQuery),
    _op(
        "GET",
        "/v1/admin/usage",
        usage,
        "Usage by day (UTC), account, model and key.",
        query=schemas.DailyUsageQuery,
    ),
]
routes: list[BaseRoute] = routes_of(operations)
