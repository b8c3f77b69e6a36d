"""The web console's sessions as the store keeps them: the seam between the console and persistence.

A session is found by the sha256 of its cookie's random id, never by the id itself, and the key it
uses travels sealed (the console seals it under a key derived from the cookie's id before it gets
here): what is stored opens no session and shows no key. Kept in the store (``store.console_sessions``)
so every worker and replica knows every session; a bare proxy (no store) keeps them in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class SessionRow:
    id_hash: str  # sha256 hex of the cookie's id
    kind: str  # api | management | operator
    prefix: str
    sealed_key: str
    sealed_playground_key: str | None
    created_at: datetime
    expires_at: datetime


class SessionStore(Protocol):
    async def insert(self, row: SessionRow) -> None: ...

    async def get(self, id_hash: str, now: datetime) -> SessionRow | None:
        """The session, unless it has expired (or never was)."""
        ...

    async def set_playground_key(self, id_hash: str, sealed: str) -> None: ...

    async def delete(self, id_hash: str) -> None: ...

    async def remove_expired(self, now: datetime) -> int:
        """Delete every session whose time is up; how many went."""
        ...


class MemorySessionStore:
    """For a gateway without a store (one process): sessions live as long as the process."""

    def __init__(self) -> None:
        self._rows: dict[str, SessionRow] = {}

    async def insert(self, row: SessionRow) -> None:
        self._rows[row.id_hash] = row

    async def get(self, id_hash: str, now: datetime) -> SessionRow | None:
        row = self._rows.get(id_hash)
        return row if row is not None and row.expires_at > now else None

    async def set_playground_key(self, id_hash: str, sealed: str) -> None:
        row = self._rows.get(id_hash)
        if row is not None:
            self._rows[id_hash] = replace(row, sealed_playground_key=sealed)

    async def delete(self, id_hash: str) -> None:
        self._rows.pop(id_hash, None)

    async def remove_expired(self, now: datetime) -> int:
        gone = [h for h, row in self._rows.items() if row.expires_at <= now]
        for h in gone:
            del self._rows[h]
        return len(gone)
