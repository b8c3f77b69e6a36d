"""Who is calling and what they may spend: the seams between the pipeline and the platform layer.

The pipeline only sees these protocols; ``core.keys``, ``core.limits`` and ``core.ledger`` implement
them over the stores ``gatewright.store`` provides (through protocols declared beside them). A
gateway run as a bare proxy has none of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol, get_args

from gatewright.core.types import Cost, Usage

KeyKind = Literal["api", "management"]
SettleStatus = Literal["ok", "aborted", "error"]
# The API a request came in through, as its usage record names it: the dialects' own names (the
# chat completions of ``api/openai`` are "openai"), with OpenAI's embeddings apart.
Dialect = Literal["openai", "anthropic", "openai-responses", "task-api", "openai-embeddings"]
DIALECTS: tuple[str, ...] = get_args(Dialect)


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated key: the account it bills and the rules it runs under."""

    account_id: int
    key_id: int
    prefix: str
    kind: KeyKind
    scopes: frozenset[str]
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    models: frozenset[str] | None = None  # the key's allow-list (canonical ids); None: every model
    expires_at: datetime | None = None

    def allows(self, scope: str) -> bool:
        return not self.scopes or scope in self.scopes

    def may_call(self, model_id: str) -> bool:
        """Whether the key's allow-list lets it call the model with this canonical id."""
        return self.models is None or model_id in self.models


@dataclass(frozen=True, slots=True)
class Hold:
    """Credits reserved for one request before it runs; settled exactly once."""

    request_id: str
    account_id: int
    key_id: int
    key_prefix: str
    credits: int
    model: str


@dataclass(slots=True)
class Settlement:
    """A request's hold closed: what it cost and what its usage record says. The ledger gets it
    whole and passes it on (to its lease book, to the writer's batch) as it is."""

    hold: Hold
    usage: Usage
    cost: Cost
    status: SettleStatus
    model: str
    # For the usage record only (null when unknown): the API the request came through, and the
    # milliseconds from the gateway taking it to the end of its answer.
    dialect: str | None = None
    latency_ms: int | None = None


class Authenticator(Protocol):
    async def authenticate(self, token: str | None, fresh: bool = False) -> Principal:
        """``fresh``: read the key from the store, not the cache (a change on any replica counts at once)."""
        ...

    async def principal_of_key(self, key_id: int) -> Principal:
        """The key with this id as it is now; ``Unauthorized`` when deleted or disabled."""
        ...

    async def is_credential(self, token: str | None) -> bool:
        """``token`` is a working credential of this gateway: an account's key of either kind
        (enabled, not expired) or the operator's. Read from the store, not the cache."""
        ...


class Ledger(Protocol):
    async def reserve(self, principal: Principal, credits: int, request_id: str, model: str) -> Hold:
        """Hold ``credits`` or raise ``InsufficientCredits`` (balance or the key's spend limit)."""
        ...

    def settle(self, settlement: Settlement) -> asyncio.Future[int]:
        """Charge the settlement's ``cost`` against its ``hold`` and record the usage (with the
        request's ``dialect`` and ``latency_ms`` when known); resolves to the credits actually
        charged (never more than the hold). Safe to call without awaiting."""
        ...

    async def flush(self) -> None:
        """Wait until every reservation and settlement queued so far is written."""
        ...

    async def charged(self, request_ids: Sequence[str]) -> int:
        """Credits charged to these requests in all (settlements queued so far included)."""
        ...


@dataclass(frozen=True, slots=True)
class LimitState:
    """What the rate-limit headers report; ``None`` fields mean no limit of that kind."""

    requests_limit: int | None = None
    requests_remaining: int | None = None
    requests_reset: float = 0.0
    tokens_limit: int | None = None
    tokens_remaining: int | None = None
    tokens_reset: float = 0.0


class Limiter(Protocol):
    async def acquire(self, principal: Principal, estimated_tokens: int) -> LimitState:
        """Count one request against the key's limits, or raise ``RateLimited``."""
        ...

    async def record_tokens(self, principal: Principal, tokens: int) -> None:
        """Charge the tokens a finished request actually used (beyond the estimate)."""
        ...


@dataclass(frozen=True, slots=True)
class Platform:
    authenticator: Authenticator
    ledger: Ledger
    limiter: Limiter
