"""Request bodies and query strings of the key and billing APIs (003 L10455-10480, L33046-33088).

Management requests reject unknown fields: a misspelt ``disabeld`` must not silently leave a key
enabled. Bodies are strictly typed (``api.wire``); query strings are text, so their values are
converted (``?limit=10``). Fields the reference does not have are marked ``gatewright extension``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from gatewright.api.wire import INT64_MAX
from gatewright.core.platform import Dialect

Retention = Literal["day", "week", "month", "no_reset"]
MAX_USD = 1_000_000_000  # keeps every amount inside a BIGINT of credits
MAX_PER_MINUTE = 2_147_483_647
ModelName = Annotated[str, Field(min_length=1, max_length=200)]


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, allow_inf_nan=False, frozen=True, extra="forbid")


class _Query(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class KeyLimitBody(_Body):
    # A limit without a period is a plain total cap.
    retention: Retention = "no_reset"
    threshold: float = Field(ge=0, le=MAX_USD)  # USD per period


class RateLimitBody(_Body):
    """gatewright extension: per-key rate limits; null means the gateway's default."""

    requests_per_minute: int | None = Field(default=None, ge=1, le=MAX_PER_MINUTE)
    tokens_per_minute: int | None = Field(default=None, ge=1, le=MAX_PER_MINUTE)


class KeyCreate(_Body):
    name: str | None = Field(default=None, max_length=200)
    limit: KeyLimitBody | None = None
    scopes: list[str] | None = None
    rate_limit: RateLimitBody | None = None  # gatewright extension
    # gatewright extensions: the models the key may call (ids or aliases), and when it expires.
    models: list[ModelName] | None = Field(default=None, max_length=200)
    expires_at: int | None = Field(default=None, ge=0, le=253402300799)  # Unix seconds


class KeyUpdate(_Body):
    """Only the fields present change; ``"limit": null`` removes the spending limit."""

    name: str | None = Field(default=None, max_length=200)
    disabled: bool | None = None
    limit: KeyLimitBody | None = None
    scopes: list[str] | None = None
    rate_limit: RateLimitBody | None = None  # gatewright extension
    models: list[ModelName] | None = Field(default=None, max_length=200)  # null: every model
    expires_at: int | None = Field(default=None, ge=0, le=253402300799)  # null: never


class CreditsBody(_Body):
    """gatewright extension: add (or, negative, remove) credits; give ``credits`` or ``usd``."""

    credits: int | None = Field(default=None, ge=-2 * 10**15, le=2 * 10**15)
    usd: float | None = Field(default=None, ge=-MAX_USD, le=MAX_USD)
    note: str | None = Field(default=None, max_length=500)


class UsageQuery(_Query):
    """gatewright extension: ``GET /v1/billing/usage`` filters, newest first, paged by ``after``."""

    since: datetime | None = None  # inclusive; ISO 8601 date or time, or Unix seconds; UTC if naive
    until: datetime | None = None  # exclusive
    model: str | None = None  # a model id or alias
    key: str | None = Field(default=None, min_length=1, max_length=8)  # a key prefix
    status: Literal["ok", "aborted", "error"] | None = None
    dialect: Dialect | None = None  # the API the requests came through
    limit: int = Field(default=100, ge=1, le=1000)
    after: int | None = Field(default=None, ge=1, le=INT64_MAX)  # the `last_id` of the previous page


# -- the operator's requests (gatewright extensions) ----------------------------------------------


class AccountCreate(_Body):
    name: str = Field(min_length=1, max_length=200)
    email: str | None = Field(default=None, max_length=320)
    credits: int = Field(default=0, ge=0, le=2 * 10**15)  # starting credits


class AccountUpdate(_Body):
    """Only the fields present change."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    email: str | None = Field(default=None, max_length=320)
    disabled: bool | None = None


class CodesCreate(_Body):
    """Mint ``count`` redemption codes worth ``credits`` (or ``usd``) each."""

    credits: int | None = Field(default=None, ge=1, le=2 * 10**15)
    usd: float | None = Field(default=None, gt=0, le=MAX_USD)
    count: int = Field(default=1, ge=1, le=1000)
    expires_at: int | None = Field(default=None, ge=0, le=253402300799)  # Unix seconds
    note: str | None = Field(default=None, max_length=500)


class RedeemBody(_Body):
    code: str = Field(min_length=1, max_length=100)


class DailyUsageQuery(_Query):
    """Usage by day (UTC), model and key; ``since``/``until`` default to the last 30 days."""

    since: datetime | None = None
    until: datetime | None = None
    account: int | None = Field(default=None, ge=1, le=INT64_MAX)  # the operator's filter
    limit: int = Field(default=100, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=10**9)


class PageQuery(_Query):
    limit: int = Field(default=100, ge=1, le=1000)
    after: int | None = Field(default=None, ge=1, le=INT64_MAX)
