"""Accounts, keys and credits: the management side of the platform (the key and billing APIs
and the CLI use it; the request path never does)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from gatewright.core.billing import usd_to_credits
from gatewright.core.clock import RETENTIONS, aware, month_start, utcnow
from gatewright.core.errors import InvalidRequest, NotFound
from gatewright.core.keys import Authenticator, hash_key, key_prefix, new_key
from gatewright.core.platform import KeyKind
from gatewright.store.tables import accounts, api_keys, ledger, usage_records

# What an API key may call. Billing is readable by every key of the account (the reference reads
# the balance with an ordinary API key), so it needs no scope.
SCOPES = ("model:chat", "model:responses", "model:tasks")
MAX_BALANCE = 2 * 10**15  # 1,000,000,000 USD: far from a BIGINT's limit, so sums never overflow


@dataclass(frozen=True)
class KeyLimit:
    retention: str
    threshold_usd: float


@dataclass(frozen=True)
class NewKey:
    row: Any
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


def month_spent(key_row: Any, now: datetime) -> int:
    """Credits the key has spent this calendar month (UTC); the stored counter rolls over only on
    the key's next charge, so a counter from an earlier month reads as nothing spent."""
    started = aware(key_row.month_start)
    return int(key_row.month_spent) if started is not None and started >= month_start(now) else 0


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
    def __init__(self, engine: AsyncEngine, authenticator: Authenticator | None = None) -> None:
        self.engine = engine
        self.authenticator = authenticator

    async def count(self) -> int:
        async with self.engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(accounts))).scalar_one())

    async def create_account(self, name: str, credits: int, low_balance_threshold: int = 10_000) -> int:
        now = utcnow()
        async with self.engine.begin() as conn:
            result = await conn.execute(
                insert(accounts).values(
                    name=name,
                    balance=0,
                    reserved=0,
                    low_balance_threshold=low_balance_threshold,
                    created_at=now,
                    updated_at=now,
                )
            )
            account_id = int(result.inserted_primary_key[0])  # type: ignore[index]
        if credits:
            await self.add_credits(account_id, credits, "starting credits")
        return account_id

    async def add_credits(self, account_id: int, credits: int, note: str = "top-up") -> int:
        """Add (or, negative, remove) credits; returns the new balance. One ledger row.

        Removal is limited to what requests in flight have not reserved, so their settlements
        still find the credits they were promised."""
        if credits == 0:
            raise InvalidRequest("Invalid 'credits': must not be 0.", param="credits")
        now = utcnow()
        async with self.engine.begin() as conn:
            query = select(accounts.c.balance, accounts.c.reserved).where(accounts.c.id == account_id)
            if self.engine.dialect.name == "postgresql":
                query = query.with_for_update()
            row = (await conn.execute(query)).first()
            if row is None:
                raise NotFound(f"No account {account_id}.")
            balance = row.balance + credits
            if balance > MAX_BALANCE:
                raise InvalidRequest(
                    f"Adding {credits} credits would take the balance past {MAX_BALANCE:,} credits.", param="credits"
                )
            if balance - row.reserved < 0:
                available = row.balance - row.reserved
                raise InvalidRequest(
                    f"Cannot remove {-credits} credits: the account has {available} available "
                    f"({row.balance} balance, {row.reserved} reserved by requests in flight).",
                    param="credits",
                )
            await conn.execute(
                update(accounts).where(accounts.c.id == account_id).values(balance=balance, updated_at=now)
            )
            await conn.execute(
                insert(ledger).values(
                    account_id=account_id,
                    kind="grant" if credits >= 0 else "adjust",
                    credits=credits,
                    balance_after=balance,
                    note=note,
                    created_at=now,
                )
            )
        return int(balance)

    async def account(self, account_id: int) -> Any:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(accounts).where(accounts.c.id == account_id))).first()
        if row is None:
            raise NotFound(f"No account {account_id}.")
        return row

    async def accounts(self) -> list[Any]:
        async with self.engine.connect() as conn:
            return list(await conn.execute(select(accounts).order_by(accounts.c.id)))

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
            try:
                async with self.engine.begin() as conn:
                    await conn.execute(insert(api_keys).values(**values))
            except IntegrityError:
                continue
            return NewKey(await self.key(str(values["prefix"]), account_id), key)
        raise RuntimeError("could not find a free key prefix")

    async def key(self, prefix: str, account_id: int | None = None, kind: KeyKind | None = None) -> Any:
        query = select(api_keys).where(api_keys.c.prefix == prefix, api_keys.c.deleted_at.is_(None))
        if account_id is not None:
            query = query.where(api_keys.c.account_id == account_id)
        if kind is not None:
            query = query.where(api_keys.c.kind == kind)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            raise NotFound(f"No API key with prefix '{prefix}'.", param="prefix", code="key_not_found")
        return row

    async def keys(self, account_id: int | None = None, kind: KeyKind | None = None) -> list[Any]:
        query = select(api_keys).where(api_keys.c.deleted_at.is_(None)).order_by(api_keys.c.created_at, api_keys.c.id)
        if account_id is not None:
            query = query.where(api_keys.c.account_id == account_id)
        if kind is not None:
            query = query.where(api_keys.c.kind == kind)
        async with self.engine.connect() as conn:
            return list(await conn.execute(query))

    async def update_key(
        self, prefix: str, account_id: int | None, changes: dict[str, Any], kind: KeyKind | None = None
    ) -> Any:
        """Apply ``name``, ``disabled``, ``limit`` (KeyLimit or None), ``scopes``, rate limits."""
        row = await self.key(prefix, account_id, kind)
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
            if values["limit_retention"] != row.limit_retention:
                # A new period kind starts a new period; a new threshold keeps what was spent in it.
                values["period_start"] = None
                values["period_spent"] = 0
        if values:
            values["updated_at"] = utcnow()
            async with self.engine.begin() as conn:
                await conn.execute(update(api_keys).where(api_keys.c.id == row.id).values(**values))
            if self.authenticator is not None:
                self.authenticator.forget(prefix)
        return await self.key(prefix, account_id)

    async def delete_key(self, prefix: str, account_id: int | None, kind: KeyKind | None = None) -> None:
        row = await self.key(prefix, account_id, kind)
        now = utcnow()
        async with self.engine.begin() as conn:
            await conn.execute(
                update(api_keys).where(api_keys.c.id == row.id).values(deleted_at=now, disabled=True, updated_at=now)
            )
        if self.authenticator is not None:
            self.authenticator.forget(prefix)

    def _usage_where(self, query: Any, account_id: int | None, flt: UsageFilter) -> Any:
        u = usage_records.c
        if account_id is not None:
            query = query.where(u.account_id == account_id)
        if flt.since is not None:
            query = query.where(u.created_at >= flt.since)
        if flt.until is not None:
            query = query.where(u.created_at < flt.until)
        if flt.model:
            query = query.where(u.model == flt.model)
        if flt.key_prefix:
            query = query.where(u.key_prefix == flt.key_prefix)
        if flt.status:
            query = query.where(u.status == flt.status)
        return query

    async def usage(self, account_id: int | None, flt: UsageFilter) -> list[Any]:
        """Usage records matching ``flt``, newest first, at most ``flt.limit``."""
        u = usage_records.c
        query = self._usage_where(select(usage_records), account_id, flt).order_by(u.id.desc()).limit(flt.limit)
        if flt.after_id is not None:
            query = query.where(u.id < flt.after_id)
        async with self.engine.connect() as conn:
            return list(await conn.execute(query))

    async def usage_totals(self, account_id: int | None, flt: UsageFilter) -> UsageTotals:
        """Sums over every record matching ``flt`` (all pages)."""
        u = usage_records.c
        sums = select(
            func.count(),
            func.coalesce(func.sum(u.input_tokens), 0),
            func.coalesce(func.sum(u.cached_tokens), 0),
            func.coalesce(func.sum(u.output_tokens), 0),
            func.coalesce(func.sum(u.credits), 0),
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(self._usage_where(sums, account_id, flt))).one()
        return UsageTotals(*(int(value) for value in row))

    async def ledger(self, account_id: int, limit: int = 100) -> list[Any]:
        query = select(ledger).where(ledger.c.account_id == account_id).order_by(ledger.c.id.desc()).limit(limit)
        async with self.engine.connect() as conn:
            return list(await conn.execute(query))
