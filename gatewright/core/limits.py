"""Per-key rate limits: requests and tokens per minute, as token buckets.

A bucket holds up to one minute's allowance and refills continuously. A request needs one request
token and a tokens bucket that is not empty; its prompt is charged up front and its output when it
ends (a bucket may go into debt, which the next requests wait out). ``MemoryLimiter`` keeps the
buckets in this process; ``store.redis_limits.RedisLimiter`` keeps them in Redis so replicas share
one limit.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from gatewright.core.errors import RateLimited
from gatewright.core.platform import LimitState, Principal

UNLIMITED = LimitState()


@dataclass(frozen=True, slots=True)
class Defaults:
    requests_per_minute: int | None
    tokens_per_minute: int | None


def limits_of(principal: Principal, defaults: Defaults) -> tuple[int | None, int | None]:
    rpm = principal.requests_per_minute if principal.requests_per_minute is not None else defaults.requests_per_minute
    tpm = principal.tokens_per_minute if principal.tokens_per_minute is not None else defaults.tokens_per_minute
    return rpm, tpm


@dataclass(slots=True)
class Bucket:
    capacity: float
    level: float
    stamp: float

    @property
    def rate(self) -> float:
        return self.capacity / 60.0

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def reset_in(self) -> float:
        return max(0.0, (self.capacity - self.level) / self.rate)


def state_of(requests: Bucket | None, tokens: Bucket | None) -> LimitState:
    return LimitState(
        requests_limit=int(requests.capacity) if requests else None,
        requests_remaining=max(0, math.floor(requests.level)) if requests else None,
        requests_reset=requests.reset_in() if requests else 0.0,
        tokens_limit=int(tokens.capacity) if tokens else None,
        tokens_remaining=max(0, math.floor(tokens.level)) if tokens else None,
        tokens_reset=tokens.reset_in() if tokens else 0.0,
    )


def refusal(what: str, limit: int, wait: float, state: LimitState) -> RateLimited:
    error = RateLimited(
        f"Rate limit reached for {what} per minute (limit {limit}) on this API key. Try again in {wait:.2f}s.",
        retry_after=wait,
        code=f"rate_limit_{what}",
    )
    error.limits = state  # type: ignore[attr-defined]
    return error


class MemoryLimiter:
    """Buckets in this process. ``share`` processes serving one port each hold 1/share of every
    limit (rounded up), so together they never allow more than it; use Redis for exact limits."""

    def __init__(self, defaults: Defaults, share: int = 1) -> None:
        self.defaults = defaults
        self.share = share
        self._buckets: dict[tuple[int, str], Bucket] = {}

    def _bucket(self, key_id: int, kind: str, capacity: int | None, now: float) -> Bucket | None:
        if capacity is None:
            return None
        if self.share > 1:
            capacity = -(-capacity // self.share)
        bucket = self._buckets.get((key_id, kind))
        if bucket is None or bucket.capacity != capacity:
            bucket = self._buckets[(key_id, kind)] = Bucket(float(capacity), float(capacity), now)
        else:
            bucket.refill(now)
        return bucket

    async def acquire(self, principal: Principal, estimated_tokens: int) -> LimitState:
        rpm, tpm = limits_of(principal, self.defaults)
        now = time.monotonic()
        requests = self._bucket(principal.key_id, "requests", rpm, now)
        tokens = self._bucket(principal.key_id, "tokens", tpm, now)
        if requests is not None and requests.level < 1:
            raise refusal(
                "requests", int(requests.capacity), (1 - requests.level) / requests.rate, state_of(requests, tokens)
            )
        if tokens is not None and tokens.level <= 0:
            raise refusal("tokens", int(tokens.capacity), (1 - tokens.level) / tokens.rate, state_of(requests, tokens))
        if requests is not None:
            requests.level -= 1
        if tokens is not None:
            tokens.level -= estimated_tokens
        return state_of(requests, tokens)

    async def record_tokens(self, principal: Principal, tokens: int) -> None:
        bucket = self._buckets.get((principal.key_id, "tokens"))
        if bucket is not None:
            bucket.refill(time.monotonic())
            bucket.level -= tokens
