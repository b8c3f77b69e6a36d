"""Store rows → the wire objects of the key and billing APIs, field for field as the reference
documents them (key object 003 L32993-33045; balance L10338-10379; v2 billing L10380-10448)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gatewright.core.accounts import UsageTotals, month_spent
from gatewright.core.billing import credits_to_usd
from gatewright.core.clock import aware, iso

# Balance status, by the first rule that matches: (status, explanation).
_DEPLETED = ("depleted", "No credits are left: model calls are refused with 402 until credits are added")
_LOW = ("low", "Balance is below the low-balance threshold")
_CURRENT = ("current", "Balance is current and up to date")


def key_object(row: Any, now: datetime, key: str | None = None) -> dict[str, Any]:
    """A key as the reference shows it; ``key`` (the secret) only in the creation response."""
    out: dict[str, Any] = {
        "name": row.name,
        "disabled": bool(row.disabled),
        "prefix": row.prefix,
        "scopes": list(row.scopes or ()),
        "limit": (
            {"retention": row.limit_retention, "threshold": credits_to_usd(row.limit_threshold)}
            if row.limit_retention is not None
            else None
        ),
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
        "monthly_usage": credits_to_usd(month_spent(row, now)),  # USD spent this calendar month (UTC)
        # gatewright extensions: the key's kind and its own rate limits (null: the gateway default).
        "kind": row.kind,
        "rate_limit": {"requests_per_minute": row.requests_per_minute, "tokens_per_minute": row.tokens_per_minute},
        "models": list(row.models) if row.models is not None else None,  # null: every model
        "expires_at": int(aware(row.expires_at).timestamp()) if row.expires_at is not None else None,  # type: ignore[union-attr]
        # gatewright extension: the last time a request of the key was billed (null: never used).
        "last_used_at": iso(row.last_used_at),
    }
    if key is not None:
        out["key"] = key
    return out


def balance_object(account: Any, now: datetime) -> dict[str, Any]:
    """``GET /v1/billing/balance``: credits (2,000,000 = 1 USD)."""
    balance = int(account.balance)
    threshold = int(account.low_balance_threshold)
    status, explanation = _DEPLETED if balance <= 0 else _LOW if balance < threshold else _CURRENT
    return {
        "balance": balance,
        "lowBalance": balance < threshold,
        "lowBalanceThreshold": threshold,
        "lastUpdated": iso(now),
        "autoDebitStatus": "disabled",  # gatewright has no payment integration, so no auto top-up
        "status": status,
        "statusExplanation": explanation,
        # gatewright extensions: credits held by requests in flight, and what new requests can use.
        "reserved": int(account.reserved),
        "available": balance - int(account.reserved),
    }


def billing_object(account: Any) -> dict[str, Any]:
    """``GET /v2/billing``: the same balance in USD."""
    return {"current_balance": credits_to_usd(int(account.balance)), "currency": "USD"}


def billing_detail_object(account: Any) -> dict[str, Any]:
    """``GET /v2/billing/detail``; the account stands for the reference's user."""
    out: dict[str, Any] = {"user_id": account.id, "name": account.name}  # name: gatewright extension
    if account.email:
        out["email"] = account.email
    out |= billing_object(account)
    out["autotopup_settings"] = {"is_enabled": False, "currency": "USD"}
    return out


def usage_object(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "request_id": row.request_id,
        "created_at": iso(row.created_at),
        "key_prefix": row.key_prefix,
        "model": row.model,
        "input_tokens": row.input_tokens,
        "cached_tokens": row.cached_tokens,
        "output_tokens": row.output_tokens,
        "reasoning_tokens": row.reasoning_tokens,
        "total_tokens": row.input_tokens + row.output_tokens,
        "credits": int(row.credits),
        "usd": credits_to_usd(int(row.credits)),
        "status": row.status,  # ok | aborted (client left; billed for what was generated) | error (not billed)
        "estimated": bool(row.estimated),
        # gatewright extensions (null on records from before they were kept): the API the request
        # came through, and milliseconds from the gateway taking it to the end of its answer.
        "dialect": row.dialect,
        "latency_ms": row.latency_ms,
    }


def totals_object(totals: UsageTotals) -> dict[str, Any]:
    return {
        "requests": totals.requests,
        "input_tokens": totals.input_tokens,
        "cached_tokens": totals.cached_tokens,
        "output_tokens": totals.output_tokens,
        "credits": totals.credits,
        "usd": credits_to_usd(totals.credits),
    }


def page(data: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    """A page of objects with ids, newest first; ``after`` = ``last_id`` reads the next one."""
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(data) == limit,
    }


def ledger_object(entry: Any) -> dict[str, Any]:
    return {
        "id": entry.id,
        "created_at": iso(entry.created_at),
        "kind": entry.kind,  # charge | grant | adjust | redeem
        "credits": entry.credits,  # signed change of balance
        "usd": credits_to_usd(entry.credits),
        "balance_after": entry.balance_after,
        "request_id": entry.request_id,
        "note": entry.note,
        "actor": entry.actor,  # who: operator:<prefix>, key:<prefix>, cli, system
    }


def bucket_object(row: Any) -> dict[str, Any]:
    return {
        "day": row.day,
        "account_id": row.account_id,
        "model": row.model,
        "key_prefix": row.key_prefix,
        "requests": row.requests,
        "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens,
        "credits": row.credits,
        "usd": credits_to_usd(row.credits),
    }


def account_object(account: Any) -> dict[str, Any]:
    return {
        "id": account.id,
        "object": "account",
        "name": account.name,
        "email": account.email,
        "disabled": bool(account.disabled),
        "balance": int(account.balance),
        "reserved": int(account.reserved),
        "available": int(account.balance) - int(account.reserved),
        "spent": int(account.spent),
        "created_at": iso(account.created_at),
        "updated_at": iso(account.updated_at),
    }


def code_object(row: Any, code: str | None = None) -> dict[str, Any]:
    """A redemption code; the secret ``code`` only in the minting response."""
    out: dict[str, Any] = {
        "id": row.id,
        "prefix": row.prefix,
        "credits": row.credits,
        "usd": credits_to_usd(row.credits),
        "note": row.note,
        "created_by": row.created_by,
        "created_at": iso(row.created_at),
        "expires_at": iso(row.expires_at) if row.expires_at is not None else None,
        "redeemed_at": iso(row.redeemed_at) if row.redeemed_at is not None else None,
        "redeemed_by": row.redeemed_by,
    }
    if code is not None:
        out["code"] = code
    return out
