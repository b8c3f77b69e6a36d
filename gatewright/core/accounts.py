"""Accounts, keys and credits: the management side of the platform (the key and billing APIs
and the CLI use it; the request path never does).

Rows are read and written through an ``AccountStore`` (``store.accounts.SqlAccountStore``) as typed
records. Credits never change here: a grant is an operation of the ledger (``CreditLedger``),
decided by ``core.ledger_rules`` and written by the ledger's one writer like every other change of
a balance.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from gatewright.core.billing import usd_to_credits
from gatewright.core.clock import RETENTIONS, aware, month_start, utcnow
from gatewright.core.errors import InvalidRequest, NotFound
from gatewright.core.keys import Authenticator, KeyRecord, hash_key, key_prefix, new_key
from gatewright.core.platform import KeyKind

# What an API key may call. Billing is readable by every key of the account (the reference reads
# the balance with an ordinary API key), so it needs no scope.
SCOPES = ("model:chat", "model:responses", "model:tasks")


@dataclass(frozen=True, slots=True)
class AccountRecord:
    id: int
    name: str
    email: str | None
    balance: int
    reserved: int  # held by requests in flight; new requests can use balance - reserved
    low_balance_threshold: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One settled request: its tokens and what it was charged."""

    id: int
    request_id: str
    account_id: int
    key_id: int
    key_prefix: str
    model: str
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    reasoning_tokens: int
    credits: int
    usd: float
    status: str  # ok | aborted | error
    estimated: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One change of an account's balance."""

    id: int
    account_id: int
    key_id: int | None
    request_id: str | None
    kind: str  # charge | grant | adjust
    credits: int  # signed
    balance_after: int
    note: str | None
    created_at: datetime


@dataclass(frozen=True)
class KeyLimit:
    retention: str
    threshold_usd: float


@dataclass(frozen=True)
class NewKey:
    row: KeyRecord
    key: str  # shown once


@dataclass(frozen=True)
class UsageFilter:
    since: datetime | None = None
    until: datetime | None = None
    model: str | None = None
    key_prefix: str | None = None
    status: str | None = None
    limit: int = 100
    after_id: int | None = None  # page on: records older than this id


@dataclass(frozen=True)
class UsageTotals:
    requests: int
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    credits: int


class AccountStore(Protocol):
    """Accounts, keys, usage and ledger entries as the management side reads and writes them.
    Balances are not written here (see ``CreditLedger``)."""

    async def count(self) -> int: ...

    async def insert_account(self, name: str, low_balance_threshold: int) -> int:
        """A new account with nothing in it; returns its id."""
        ...

    async def account(self, account_id: int) -> AccountRecord | None: ...

    async def accounts(self) -> list[AccountRecord]: ...

    async def insert_key(self, values: dict[str, Any]) -> bool:
        """Store a new key (``values`` named like ``KeyRecord``'s fields, plus ``key_hash``);
        False when its prefix or hash is taken."""
        ...

    async def key(self, prefix: str, account_id: int | None, kind: KeyKind | None) -> KeyRecord | None:
        """The key (not deleted) with this prefix, optionally of this account and kind."""
        ...

    async def keys(self, account_id: int | None, kind: KeyKind | None) -> list[KeyRecord]:
        """Keys not deleted, oldest first."""
        ...

    async def update_key(self, key_id: int, values: dict[str, Any]) -> None:
        """Change fields named like ``KeyRecord``'s."""
        ...

    async def delete_key(self, key_id: int) -> None:
        """Mark deleted (the row stays: usage and holds refer to it) and disabled."""
        ...

    async def usage(self, account_id: int | None, flt: UsageFilter) -> list[UsageRecord]:
        """Records matching ``flt``, newest first, at most ``flt.limit``."""
        ...

    async def usage_totals(self, account_id: int | None, flt: UsageFilter) -> UsageTotals:
        """Sums over every record matching ``flt`` (all pages)."""
        ...

    async def ledger(self, account_id: int, limit: int) -> list[LedgerEntry]:
        """The newest balance changes first."""
        ...


class CreditLedger(Protocol):
    async def grant(self, account_id: int, credits: int, note: str) -> int:
        """Add (or, negative, remove) credits; returns the new balance (see ``ledger_rules.decide_grant``)."""
        ...


def month_spent(key: KeyRecord, now: datetime) -> int:
    """Credits the key has spent this calendar month (UTC); the stored counter rolls over only on
    the key's next charge, so a counter from an earlier month reads as nothing spent."""
    started = aware(key.month_start)
    return key.month_spent if started is not None and started >= month_start(now) else 0


def _check_limit(limit: KeyLimit | None) -> None:
    if limit is None:
        return
    if limit.retention not in RETENTIONS:
        raise InvalidRequest(
            f"Invalid 'limit.retention': must be one of {', '.join(RETENTIONS)}.", param="limit.retention"
        )
    if limit.threshold_usd < 0:
        raise InvalidRequest("Invalid 'limit.threshold': must be ≥ 0 (USD).", param="limit.threshold")


def _check_scopes(scopes: list[str] | None) -> None:
    for scope in scopes or ():
        if scope not in SCOPES:
            raise InvalidRequest(f"Unknown scope '{scope}'; known scopes: {', '.join(SCOPES)}.", param="scopes")


class Accounts:
    def __init__(self, store: AccountStore, ledger: CreditLedger, authenticator: Authenticator | None = None) -> None:
        self.store = store
        self.ledger = ledger
        self.authenticator = authenticator

    async def count(self) -> int:
        return await self.store.count()

    async def create_account(self, name: str, credits: int, low_balance_threshold: int = 10_000) -> int:
        account_id = await self.store.insert_account(name, low_balance_threshold)
        if credits:
            await self.add_credits(account_id, credits, "starting credits")
        return account_id

    async def add_credits(self, account_id: int, credits: int, note: str = "top-up") -> int:
        """Add (or, negative, remove) credits; returns the new balance. One ledger row.

        Removal is limited to what requests in flight have not reserved, so their settlements
        still find the credits they were promised."""
        return await self.ledger.grant(account_id, credits, note)

    async def account(self, account_id: int) -> AccountRecord:
        account = await self.store.account(account_id)
        if account is None:
            raise NotFound(f"No account {account_id}.")
        return account

    async def accounts(self) -> list[AccountRecord]:
        return await self.store.accounts()

    async def create_key(
        self,
        account_id: int,
        kind: KeyKind = "api",
        name: str | None = None,
        scopes: list[str] | None = None,
        limit: KeyLimit | None = None,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
    ) -> NewKey:
        _check_limit(limit)
        _check_scopes(scopes)
        now = utcnow()
        for _ in range(5):  # a prefix collision is astronomically rare; retry anyway
            key = new_key(kind)
            values = {
                "account_id": account_id,
                "prefix": key_prefix(key),
                "key_hash": hash_key(key),
                "kind": kind,
                "name": name,
                "disabled": False,
                "scopes": list(scopes) if scopes is not None else ["model:chat"],
                "limit_retention": limit.retention if limit else None,
                "limit_threshold": usd_to_credits(limit.threshold_usd) if limit else None,
                "period_spent": 0,
                "period_reserved": 0,
                "month_spent": 0,
                "requests_per_minute": requests_per_minute,
                "tokens_per_minute": tokens_per_minute,
                "created_at": now,
                "updated_at": now,
            }
            if await self.store.insert_key(values):
                return NewKey(await self.key(str(values["prefix"]), account_id), key)
        raise RuntimeError("could not find a free key prefix")

    async def key(self, prefix: str, account_id: int | None = None, kind: KeyKind | None = None) -> KeyRecord:
        key = await self.store.key(prefix, account_id, kind)
        if key is None:
            raise NotFound(f"No API key with prefix '{prefix}'.", param="prefix", code="key_not_found")
        return key

    async def keys(self, account_id: int | None = None, kind: KeyKind | None = None) -> list[KeyRecord]:
        return await self.store.keys(account_id, kind)

    async def update_key(
        self, prefix: str, account_id: int | None, changes: dict[str, Any], kind: KeyKind | None = None
    ) -> KeyRecord:
        """Apply ``name``, ``disabled``, ``limit`` (KeyLimit or None), ``scopes``, rate limits."""
        key = await self.key(prefix, account_id, kind)
        values: dict[str, Any] = {}
        for field in ("name", "disabled", "requests_per_minute", "tokens_per_minute"):
            if field in changes:
                values[field] = changes[field]
        if "scopes" in changes:
            _check_scopes(changes["scopes"])
            values["scopes"] = list(changes["scopes"] or [])
        if "limit" in changes:
            limit: KeyLimit | None = changes["limit"]
            _check_limit(limit)
            values["limit_retention"] = limit.retention if limit else None
            values["limit_threshold"] = usd_to_credits(limit.threshold_usd) if limit else None
            if values["limit_retention"] != key.limit_retention:
                # A new period kind starts a new period; a new threshold keeps what was spent in it.
                values["period_start"] = None
                values["period_spent"] = 0
        if values:
            values["updated_at"] = utcnow()
            await self.store.update_key(key.id, values)
            if self.authenticator is not None:
                self.authenticator.forget(prefix)
        return await self.key(prefix, account_id)

    async def delete_key(self, prefix: str, account_id: int | None, kind: KeyKind | None = None) -> None:
        key = await self.key(prefix, account_id, kind)
        await self.store.delete_key(key.id)
        if self.authenticator is not None:
            self.authenticator.forget(prefix)

    async def usage(self, account_id: int | None, flt: UsageFilter) -> list[UsageRecord]:
        """Usage records matching ``flt``, newest first, at most ``flt.limit``."""
        return await self.store.usage(account_id, flt)

    async def usage_totals(self, account_id: int | None, flt: UsageFilter) -> UsageTotals:
        """Sums over every record matching ``flt`` (all pages)."""
        return await self.store.usage_totals(account_id, flt)

    async def ledger_entries(self, account_id: int, limit: int = 100) -> list[LedgerEntry]:
        return await self.store.ledger(account_id, limit)
