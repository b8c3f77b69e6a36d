"""Stored responses of the Responses API in SQL (the ``responses`` table, migration 0003).

Implements ``core.stored.ResponseStore``: every read and delete is scoped by account id, so one
account never sees another's responses, and a response past ``expires_at`` is never read even
before the sweep removes it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gatewright.store.tables import responses


class SqlResponseStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def save(
        self, account_id: int, response_id: str, document: bytes, created_at: datetime, expires_at: datetime
    ) -> None:
        row = {
            "id": response_id,
            "account_id": account_id,
            "document": document.decode(),
            "created_at": created_at,
            "expires_at": expires_at,
        }
        async with self.engine.begin() as conn:
            await conn.execute(insert(responses).values(row))

    async def load(self, account_id: int, response_id: str, now: datetime) -> bytes | None:
        query = select(responses.c.document).where(
            responses.c.id == response_id, responses.c.account_id == account_id, responses.c.expires_at > now
        )
        async with self.engine.connect() as conn:
            document = (await conn.execute(query)).scalar_one_or_none()
        return document.encode() if document is not None else None

    async def delete(self, account_id: int, response_id: str) -> bool:
        query = delete(responses).where(responses.c.id == response_id, responses.c.account_id == account_id)
        async with self.engine.begin() as conn:
            result = await conn.execute(query)
        return bool(result.rowcount)

    async def remove_expired(self, now: datetime) -> int:
        async with self.engine.begin() as conn:
            result = await conn.execute(delete(responses).where(responses.c.expires_at <= now))
        return int(result.rowcount or 0)
