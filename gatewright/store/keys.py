"""API keys in SQL: the ``core.keys.KeyStore`` the authenticator reads, as ``KeyRecord``s."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gatewright.core.keys import KeyRecord, OperatorRecord
from gatewright.store.tables import accounts, api_keys, operator_keys

# A key with its account's state: one indexed join, in the lookup the authenticator caches anyway.
_LIVE = (
    select(api_keys, accounts.c.disabled.label("account_disabled"))
    .join(accounts, accounts.c.id == api_keys.c.account_id)
    .where(api_keys.c.deleted_at.is_(None))
)
_OPERATOR = select(operator_keys).where(operator_keys.c.deleted_at.is_(None))


def key_record(row: Any) -> KeyRecord:
    return KeyRecord(
        id=int(row.id),
        account_id=int(row.account_id),
        prefix=row.prefix,
        kind=row.kind,
        name=row.name,
        disabled=bool(row.disabled),
        scopes=tuple(row.scopes or ()),
        limit_retention=row.limit_retention,
        limit_threshold=None if row.limit_threshold is None else int(row.limit_threshold),
        period_start=row.period_start,
        period_spent=int(row.period_spent),
        period_reserved=int(row.period_reserved),
        month_start=row.month_start,
        month_spent=int(row.month_spent),
        requests_per_minute=row.requests_per_minute,
        tokens_per_minute=row.tokens_per_minute,
        created_at=row.created_at,
        updated_at=row.updated_at,
        models=None if row.models is None else tuple(row.models),
        expires_at=row.expires_at,
        account_disabled=bool(getattr(row, "account_disabled", False)),
        last_used_at=getattr(row, "last_used_at", None),
    )


def operator_record(row: Any) -> OperatorRecord:
    return OperatorRecord(id=int(row.id), prefix=row.prefix, name=row.name, created_at=row.created_at)


class SqlKeyStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def _one(self, query: Any) -> KeyRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else key_record(row)

    async def by_hash(self, digest: str) -> KeyRecord | None:
        return await self._one(_LIVE.where(api_keys.c.key_hash == digest))

    async def by_id(self, key_id: int) -> KeyRecord | None:
        return await self._one(_LIVE.where(api_keys.c.id == key_id))

    async def operator_by_hash(self, digest: str) -> OperatorRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(_OPERATOR.where(operator_keys.c.key_hash == digest))).first()
        return None if row is None else operator_record(row)
