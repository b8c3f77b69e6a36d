"""Request bodies and query strings of the key and billing APIs (003 L10455-10480, L33046-33088).

Management requests reject unknown fields: a misspelt ``disabeld`` must not silently leave a key
enabled. Bodies are strictly typed (``api.wire``); query strings are text, so their values are
converted (``?limit=10``). Fields the reference does not have are marked ``gatewright extension``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from gatewright.api.wire import INT64_MAX

Retention = Literal["day", "week", "month", "no_reset"]
MAX_USD = 1_000_000_000  # keeps every amount inside a BIGINT of credits
MAX_PER_MINUTE = 2_147_483_647


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


class KeyUpdate(_Body):
    """Only the fields present change; ``"limit": null`` removes the spending limit."""

    name: str | None = Field(default=None, max_length=200)
    disabled: bool | None = None
    limit: KeyLimitBody | None = None
    scopes: list[str] | None = None
    rate_limit: RateLimitBody | None = None  # gatewright extension


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
    limit: int = Field(default=100, ge=1, le=1000)
    after: int | None = Field(default=None, ge=1, le=INT64_MAX)  # the `last_id` of the previous page
