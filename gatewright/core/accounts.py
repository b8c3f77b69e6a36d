"""Accounts, keys and credits: the management side of the platform (the key and billing APIs
and the CLI use it; the request path never does).

Rows are read and written through an ``AccountStore`` (``store.accounts.SqlAccountStore``) as typed
records. Credits never change here: a grant is an operation of the ledger (``CreditLedger``),
decided by ``core.ledger_rules`` and written by the ledger's one writer like every other change of
a balance.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from gatewright.core.billing import usd_to_credits
from gatewright.core.clock import RETENTIONS, aware, month_start, utcnow
from gatewright.core.errors import Conflict, InvalidRequest, NotFound
from gatewright.core.keys import Authenticator, KeyRecord, OperatorRecord, hash_key, key_prefix, new_key
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
    disabled: bool = False
    spent: int = 0  # credits charged in all (filled in by listings for the operator)


@dataclass(frozen=True, slots=True)
class CodeRecord:
    """A redemption code (its secret is shown once, at minting; only its hash is stored)."""

    id: int
    prefix: str
    credits: int
    note: str | None
    created_by: str | None
    created_at: datetime
    expires_at: datetime | None
    redeemed_at: datetime | None
    redeemed_by: int | None


@dataclass(frozen=True)
class NewCode:
    row: CodeRecord
    code: str  # shown once


@dataclass(frozen=True, slots=True)
class UsageBucket:
    """Usage summed over one day, model and key."""

    day: str  # YYYY-MM-DD (UTC)
    account_id: int
    model: str
    key_prefix: str
    requests: int
    input_tokens: int
    output_tokens: int
    credits: int


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
    dialect: str | None = None  # core.platform.Dialect; None on records from before migration 0006
    latency_ms: int | None = None  # from the gateway taking the request to the end of its answer


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
    actor: str | None = None  # who made a grant: "operator:<prefix>", "cli", "system"


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
    dialect: str | None = None
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

    async def insert_account(self, name: str, low_balance_threshold: int, email: str | None = None) -> int:
        """A new account with nothing in it; returns its id."""
        ...

    async def account(self, account_id: int) -> AccountRecord | None:
        """The account (not deleted) with this id."""
        ...

    async def accounts(self) -> list[AccountRecord]:
        """Accounts not deleted, with what each has spent in all."""
        ...

    async def update_account(self, account_id: int, values: dict[str, Any]) -> None:
        """Change ``name``, ``email``, ``disabled``."""
        ...

    async def delete_account(self, account_id: int) -> bool:
        """Mark the account deleted (and disabled) and delete its keys, in one transaction, only
        when nothing is reserved; False when something is."""
        ...

    async def operator_count(self) -> int: ...

    async def insert_operator_key(self, values: dict[str, Any]) -> bool:
        """False when its prefix or hash is taken."""
        ...

    async def operator_keys(self) -> list[OperatorRecord]: ...

    async def delete_operator_key(self, prefix: str) -> bool: ...

    async def insert_code(self, values: dict[str, Any]) -> int | None:
        """A new redemption code; its id, or None when its prefix or hash is taken."""
        ...

    async def codes(self, limit: int, after_id: int | None) -> list[CodeRecord]:
        """Codes, newest first."""
        ...

    async def usage_daily(
        self, account_id: int | None, since: datetime, until: datetime, limit: int, offset: int
    ) -> list[UsageBucket]:
        """Usage by day (UTC), model and key, newest day first."""
        ...

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

    async def ledger(self, account_id: int, limit: int, after_id: int | None = None) -> list[LedgerEntry]:
        """The newest balance changes first (older than ``after_id``, when given)."""
        ...


class CreditLedger(Protocol):
    async def grant(self, account_id: int, credits: int, note: str, actor: str | None = None) -> int:
        """Add (or, negative, remove) credits; returns the new balance (see ``ledger_rules.decide_grant``)."""
        ...

    async def redeem(self, account_id: int, code_hash: str, actor: str | None = None) -> int:
        """Spend a code for the account; returns the credits added (see ``ledger_rules.decide_redeem``)."""
        ...

    async def fence(self) -> None:
        """Wait until an account's disabling or a key limit's change counts for the credit leases
        of every process (``core.ledger_leases``)."""
        ...

    async def give_back_idle(self, account_id: int) -> None:
        """Give back this process's credit leases of the account that no request uses now."""
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


def _check_expiry(expires_at: datetime | None) -> None:
    stamp = aware(expires_at)
    if stamp is not None and stamp <= utcnow():
        raise InvalidRequest("Invalid 'expires_at': it is in the past.", param="expires_at")


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

    async def create_account(
        self,
        name: str,
        credits: int,
        low_balance_threshold: int = 10_000,
        email: str | None = None,
        actor: str | None = None,
    ) -> int:
        account_id = await self.store.insert_account(name, low_balance_threshold, email)
        if credits:
            await self.add_credits(account_id, credits, "starting credits", actor)
        return account_id

    async def add_credits(self, account_id: int, credits: int, note: str = "top-up", actor: str | None = None) -> int:
        """Add (or, negative, remove) credits; returns the new balance. One ledger row, with who.

        Removal is limited to what requests in flight have not reserved, so their settlements
        still find the credits they were promised."""
        await self.account(account_id)  # a deleted account gets nothing
        return await self.ledger.grant(account_id, credits, note, actor)

    async def update_account(self, account_id: int, changes: dict[str, Any]) -> AccountRecord:
        """Apply ``name``, ``email``, ``disabled``. Disabling stops the account's keys: at once for
        billed requests everywhere (the ledger's reservation reads the flag), within the auth
        cache's lifetime for other calls on other replicas, at once in this process."""
        await self.account(account_id)
        values: dict[str, Any] = {f: changes[f] for f in ("name", "email", "disabled") if f in changes}
        if values:
            values["updated_at"] = utcnow()
            await self.store.update_account(account_id, values)
            if self.authenticator is not None:
                self.authenticator.forget()
            if values.get("disabled"):
                await self.ledger.fence()  # no process reserves against its credit leases any more
        return await self.account(account_id)

    async def delete_account(self, account_id: int) -> None:
        await self.account(account_id)
        await self.ledger.give_back_idle(account_id)  # credits a lease holds for no request
        if not await self.store.delete_account(account_id):
            raise Conflict(
                f"Account {account_id} has credits reserved by requests in flight; disable it, "
                "let them finish, then delete it.",
                code="account_busy",
            )
        if self.authenticator is not None:
            self.authenticator.forget()

    async def create_operator_key(self, name: str | None = None) -> tuple[OperatorRecord, str]:
        """A new operator credential; the secret is returned once."""
        for _ in range(5):
            key = new_key("operator")
            values = {"prefix": key_prefix(key), "key_hash": hash_key(key), "name": name, "created_at": utcnow()}
            if await self.store.insert_operator_key(values):
                record = next(r for r in await self.store.operator_keys() if r.prefix == values["prefix"])
                return record, key
        raise RuntimeError("could not find a free key prefix")

    async def operator_count(self) -> int:
        return await self.store.operator_count()

    async def operator_keys(self) -> list[OperatorRecord]:
        return await self.store.operator_keys()

    async def delete_operator_key(self, prefix: str) -> None:
        if not await self.store.delete_operator_key(prefix):
            raise NotFound(f"No operator key with prefix '{prefix}'.", param="prefix", code="key_not_found")

    async def mint_codes(
        self, credits: int, count: int, expires_at: datetime | None, note: str | None, actor: str | None
    ) -> list[NewCode]:
        if credits <= 0:
            raise InvalidRequest("Invalid 'credits': a code pays a positive amount.", param="credits")
        if not 1 <= count <= 1000:
            raise InvalidRequest("Invalid 'count': from 1 to 1000 codes at a time.", param="count")
        _check_expiry(expires_at)
        made: list[NewCode] = []
        while len(made) < count:
            code = new_key("code")
            row = CodeRecord(0, key_prefix(code), credits, note, actor, utcnow(), aware(expires_at), None, None)
            values = {
                "prefix": row.prefix,
                "code_hash": hash_key(code),
                "credits": credits,
                "note": note,
                "created_by": actor,
                "created_at": row.created_at,
                "expires_at": row.expires_at,
            }
            code_id = await self.store.insert_code(values)
            if code_id is not None:  # else a prefix collision (rare): draw another
                made.append(NewCode(replace(row, id=code_id), code))
        return made

    async def codes(self, limit: int = 100, after_id: int | None = None) -> list[CodeRecord]:
        return await self.store.codes(limit, after_id)

    async def redeem(self, account_id: int, code: str, actor: str | None = None) -> int:
        """Spend ``code`` for the account, exactly once whoever else tries it at the same moment;
        returns the credits added."""
        return await self.ledger.redeem(account_id, hash_key(code.strip()), actor)

    async def usage_daily(
        self, account_id: int | None, since: datetime, until: datetime, limit: int = 100, offset: int = 0
    ) -> list[UsageBucket]:
        return await self.store.usage_daily(account_id, since, until, limit, offset)

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
        models: list[str] | None = None,
        expires_at: datetime | None = None,
    ) -> NewKey:
        _check_limit(limit)
        _check_scopes(scopes)
        _check_expiry(expires_at)
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
                "models": list(dict.fromkeys(models)) if models is not None else None,
                "expires_at": aware(expires_at),
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
        if "models" in changes:
            values["models"] = list(dict.fromkeys(changes["models"])) if changes["models"] is not None else None
        if "expires_at" in changes:
            _check_expiry(changes["expires_at"])
            values["expires_at"] = aware(changes["expires_at"])
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
            if "limit" in changes:
                await self.ledger.fence()  # credit leases taken under the old limit are given back first
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

    async def ledger_entries(self, account_id: int, limit: int = 100, after_id: int | None = None) -> list[LedgerEntry]:
        return await self.store.ledger(account_id, limit, after_id)
