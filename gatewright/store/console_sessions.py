"""The web console's sessions in SQL (the ``console_sessions`` table, migration 0006): implements
``core.sessions.SessionStore``. Reads never return an expired session, even before it is swept."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gatewright.core.clock import aware
from gatewright.core.sessions import SessionRow
from gatewright.store.tables import console_sessions

_s = console_sessions.c


class SqlSessionStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def insert(self, row: SessionRow) -> None:
        values = {
            "id_hash": row.id_hash,
            "kind": row.kind,
            "prefix": row.prefix,
            "sealed_key": row.sealed_key,
            "sealed_playground_key": row.sealed_playground_key,
            "created_at": row.created_at,
            "expires_at": row.expires_at,
        }
        async with self.engine.begin() as conn:
            await conn.execute(insert(console_sessions).values(values))

    async def get(self, id_hash: str, now: datetime) -> SessionRow | None:
        query = select(console_sessions).where(_s.id_hash == id_hash, _s.expires_at > now)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        created, expires = aware(row.created_at), aware(row.expires_at)
        assert created is not None and expires is not None
        return SessionRow(
            row.id_hash, row.kind, row.prefix, row.sealed_key, row.sealed_playground_key, created, expires
        )

    async def set_playground_key(self, id_hash: str, sealed: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(console_sessions).where(_s.id_hash == id_hash).values(sealed_playground_key=sealed)
            )

    async def delete(self, id_hash: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(delete(console_sessions).where(_s.id_hash == id_hash))

    async def remove_expired(self, now: datetime) -> int:
        async with self.engine.begin() as conn:
            result = await conn.execute(delete(console_sessions).where(_s.expires_at <= now))
        return int(result.rowcount or 0)
