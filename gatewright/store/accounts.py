"""Accounts, keys, usage records and ledger entries in SQL: the ``core.accounts.AccountStore``.

Balances are never written here: every change of ``balance`` or ``reserved`` is an operation of
the ledger's one writer (``store.ledger``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from gatewright.core.accounts import (
    AccountRecord,
    CodeRecord,
    LedgerEntry,
    UsageBucket,
    UsageFilter,
    UsageRecord,
    UsageTotals,
)
from gatewright.core.clock import aware, utcnow
from gatewright.core.keys import KeyRecord, OperatorRecord
from gatewright.core.platform import KeyKind
from gatewright.store.keys import key_record, operator_record
from gatewright.store.tables import (
    accounts,
    api_keys,
    ledger,
    operator_keys,
    redemption_codes,
    usage_days,
    usage_records,
)


def account_record(row: Any) -> AccountRecord:
    return AccountRecord(
        id=int(row.id),
        name=row.name,
        email=row.email,
        balance=int(row.balance),
        reserved=int(row.reserved),
        low_balance_threshold=int(row.low_balance_threshold),
        created_at=row.created_at,
        updated_at=row.updated_at,
        disabled=bool(row.disabled),
        spent=int(getattr(row, "spent", 0) or 0),
    )


def code_record(row: Any) -> CodeRecord:
    return CodeRecord(
        id=int(row.id),
        prefix=row.prefix,
        credits=int(row.credits),
        note=row.note,
        created_by=row.created_by,
        created_at=row.created_at,
        expires_at=row.expires_at,
        redeemed_at=row.redeemed_at,
        redeemed_by=None if row.redeemed_by is None else int(row.redeemed_by),
    )


def usage_record(row: Any) -> UsageRecord:
    return UsageRecord(
        id=int(row.id),
        request_id=row.request_id,
        account_id=int(row.account_id),
        key_id=int(row.key_id),
        key_prefix=row.key_prefix,
        model=row.model,
        input_tokens=int(row.input_tokens),
        cached_tokens=int(row.cached_tokens),
        output_tokens=int(row.output_tokens),
        reasoning_tokens=int(row.reasoning_tokens),
        credits=int(row.credits),
        usd=float(row.usd),
        status=row.status,
        estimated=bool(row.estimated),
        created_at=row.created_at,
        dialect=row.dialect,
        latency_ms=None if row.latency_ms is None else int(row.latency_ms),
    )


def ledger_entry(row: Any) -> LedgerEntry:
    return LedgerEntry(
        id=int(row.id),
        account_id=int(row.account_id),
        key_id=None if row.key_id is None else int(row.key_id),
        request_id=row.request_id,
        kind=row.kind,
        credits=int(row.credits),
        balance_after=int(row.balance_after),
        note=row.note,
        created_at=row.created_at,
        actor=row.actor,
    )


def _day(value: datetime) -> str:
    return (aware(value) or value).astimezone(UTC).strftime("%Y-%m-%d")


def _usage_where(query: Any, account_id: int | None, flt: UsageFilter) -> Any:
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
    if flt.dialect:
        query = query.where(u.dialect == flt.dialect)
    return query


def _keys_of(query: Any, account_id: int | None, kind: KeyKind | None) -> Any:
    if account_id is not None:
        query = query.where(api_keys.c.account_id == account_id)
    if kind is not None:
        query = query.where(api_keys.c.kind == kind)
    return query


class SqlAccountStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def _rows(self, query: Any) -> list[Any]:
        async with self.engine.connect() as conn:
            return list(await conn.execute(query))

    async def count(self) -> int:
        async with self.engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(accounts))).scalar_one())

    async def insert_account(self, name: str, low_balance_threshold: int, email: str | None = None) -> int:
        now = utcnow()
        values = {
            "name": name,
            "email": email,
            "balance": 0,
            "reserved": 0,
            "low_balance_threshold": low_balance_threshold,
            "created_at": now,
            "updated_at": now,
        }
        async with self.engine.begin() as conn:
            result = await conn.execute(insert(accounts).values(**values))
            return int(result.inserted_primary_key[0])  # type: ignore[index]

    async def account(self, account_id: int) -> AccountRecord | None:
        query = select(accounts).where(accounts.c.id == account_id, accounts.c.deleted_at.is_(None))
        rows = await self._rows(query)
        return account_record(rows[0]) if rows else None

    async def accounts(self) -> list[AccountRecord]:
        u = usage_records.c
        spent = select(u.account_id, func.sum(u.credits).label("spent")).group_by(u.account_id).subquery()
        query = (
            select(accounts, func.coalesce(spent.c.spent, 0).label("spent"))
            .outerjoin(spent, spent.c.account_id == accounts.c.id)
            .where(accounts.c.deleted_at.is_(None))
            .order_by(accounts.c.id)
        )
        return [account_record(row) for row in await self._rows(query)]

    async def update_account(self, account_id: int, values: dict[str, Any]) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(update(accounts).where(accounts.c.id == account_id).values(**values))

    async def delete_account(self, account_id: int) -> bool:
        now = utcnow()
        a = accounts.c
        async with self.engine.begin() as conn:
            # Conditional on nothing being reserved: a reservation committed first makes this a
            # no-op; one that comes after finds the account disabled (the ledger refuses it).
            done = await conn.execute(
                update(accounts)
                .where(a.id == account_id, a.reserved == 0, a.deleted_at.is_(None))
                .values(disabled=True, deleted_at=now, updated_at=now)
            )
            if done.rowcount != 1:
                return False
            await conn.execute(
                update(api_keys)
                .where(api_keys.c.account_id == account_id, api_keys.c.deleted_at.is_(None))
                .values(deleted_at=now, disabled=True, updated_at=now)
            )
        return True

    async def operator_count(self) -> int:
        query = select(func.count()).select_from(operator_keys).where(operator_keys.c.deleted_at.is_(None))
        async with self.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def insert_operator_key(self, values: dict[str, Any]) -> bool:
        try:
            async with self.engine.begin() as conn:
                await conn.execute(insert(operator_keys).values(**values))
        except IntegrityError:
            return False
        return True

    async def operator_keys(self) -> list[OperatorRecord]:
        o = operator_keys.c
        query = select(operator_keys).where(o.deleted_at.is_(None)).order_by(o.id)
        return [operator_record(row) for row in await self._rows(query)]

    async def delete_operator_key(self, prefix: str) -> bool:
        o = operator_keys.c
        async with self.engine.begin() as conn:
            done = await conn.execute(
                update(operator_keys).where(o.prefix == prefix, o.deleted_at.is_(None)).values(deleted_at=utcnow())
            )
        return bool(done.rowcount)

    async def insert_code(self, values: dict[str, Any]) -> int | None:
        try:
            async with self.engine.begin() as conn:
                result = await conn.execute(insert(redemption_codes).values(**values))
        except IntegrityError:
            return None
        return int(result.inserted_primary_key[0])  # type: ignore[index]

    async def codes(self, limit: int, after_id: int | None) -> list[CodeRecord]:
        c = redemption_codes.c
        query = select(redemption_codes).order_by(c.id.desc()).limit(limit)
        if after_id is not None:
            query = query.where(c.id < after_id)
        return [code_record(row) for row in await self._rows(query)]

    async def usage_daily(
        self, account_id: int | None, since: datetime, until: datetime, limit: int, offset: int
    ) -> list[UsageBucket]:
        """From the day rows the ledger's writer keeps (``usage_days``): whole days (UTC), from
        ``since``'s day to ``until``'s, both included."""
        d = usage_days.c
        where = [d.day >= _day(since), d.day <= _day(until)]
        if account_id is not None:
            where.append(d.account_id == account_id)
        query = (
            select(usage_days)
            .where(and_(*where))
            .order_by(d.day.desc(), d.account_id, d.model, d.key_prefix)
            .limit(limit)
            .offset(offset)
        )
        return [
            UsageBucket(
                r.day,
                int(r.account_id),
                r.model,
                r.key_prefix,
                int(r.requests),
                int(r.input_tokens),
                int(r.output_tokens),
                int(r.credits),
            )
            for r in await self._rows(query)
        ]

    async def insert_key(self, values: dict[str, Any]) -> bool:
        try:
            async with self.engine.begin() as conn:
                await conn.execute(insert(api_keys).values(**values))
        except IntegrityError:
            return False
        return True

    async def key(self, prefix: str, account_id: int | None, kind: KeyKind | None) -> KeyRecord | None:
        query = select(api_keys).where(api_keys.c.prefix == prefix, api_keys.c.deleted_at.is_(None))
        rows = await self._rows(_keys_of(query, account_id, kind))
        return key_record(rows[0]) if rows else None

    async def keys(self, account_id: int | None, kind: KeyKind | None) -> list[KeyRecord]:
        query = select(api_keys).where(api_keys.c.deleted_at.is_(None)).order_by(api_keys.c.created_at, api_keys.c.id)
        return [key_record(row) for row in await self._rows(_keys_of(query, account_id, kind))]

    async def update_key(self, key_id: int, values: dict[str, Any]) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(**values))

    async def delete_key(self, key_id: int) -> None:
        now = utcnow()
        async with self.engine.begin() as conn:
            await conn.execute(
                update(api_keys).where(api_keys.c.id == key_id).values(deleted_at=now, disabled=True, updated_at=now)
            )

    async def usage(self, account_id: int | None, flt: UsageFilter) -> list[UsageRecord]:
        u = usage_records.c
        query = _usage_where(select(usage_records), account_id, flt).order_by(u.id.desc()).limit(flt.limit)
        if flt.after_id is not None:
            query = query.where(u.id < flt.after_id)
        return [usage_record(row) for row in await self._rows(query)]

    async def usage_totals(self, account_id: int | None, flt: UsageFilter) -> UsageTotals:
        u = usage_records.c
        sums = select(
            func.count(),
            func.coalesce(func.sum(u.input_tokens), 0),
            func.coalesce(func.sum(u.cached_tokens), 0),
            func.coalesce(func.sum(u.output_tokens), 0),
            func.coalesce(func.sum(u.credits), 0),
        )
        (row,) = await self._rows(_usage_where(sums, account_id, flt))
        return UsageTotals(*(int(value) for value in row))

    async def ledger(self, account_id: int, limit: int, after_id: int | None = None) -> list[LedgerEntry]:
        query = select(ledger).where(ledger.c.account_id == account_id).order_by(ledger.c.id.desc()).limit(limit)
        if after_id is not None:
            query = query.where(ledger.c.id < after_id)
        return [ledger_entry(row) for row in await self._rows(query)]
