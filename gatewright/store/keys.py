"""API keys in SQL: the ``core.keys.KeyStore`` the authenticator reads, as ``KeyRecord``s."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gatewright.core.keys import KeyRecord
from gatewright.store.tables import api_keys

_LIVE = select(api_keys).where(api_keys.c.deleted_at.is_(None))


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
    )


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
