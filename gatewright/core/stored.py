"""Stored responses (the Responses API's ``store``): the seam between that dialect and persistence.

A stored response is an opaque document (JSON bytes the dialect writes and reads back) owned by
one account and kept until ``expires_at``. The SQL implementation is ``store.responses``; a bare
proxy (no store, no accounts) keeps them in this process's memory.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Protocol

from gatewright.core.clock import utcnow

log = logging.getLogger("gatewright.responses")


class ResponseStore(Protocol):
    async def save(
        self, account_id: int, response_id: str, document: bytes, created_at: datetime, expires_at: datetime
    ) -> None:
        """Keep ``document`` as ``response_id`` of ``account_id`` (ids are unique; never updated)."""
        ...

    async def load(self, account_id: int, response_id: str, now: datetime) -> bytes | None:
        """The document, or ``None`` when the account has no such response or it has expired."""
        ...

    async def delete(self, account_id: int, response_id: str) -> bool:
        """Remove it; ``False`` when the account had no such response."""
        ...

    async def remove_expired(self, now: datetime) -> int:
        """Remove every response whose time is up; how many went."""
        ...


class MemoryResponseStore:
    """For a gateway without a store: responses live as long as the process (or their retention)."""

    def __init__(self) -> None:
        self._docs: dict[tuple[int, str], tuple[bytes, datetime]] = {}

    async def save(
        self, account_id: int, response_id: str, document: bytes, created_at: datetime, expires_at: datetime
    ) -> None:
        self._docs[(account_id, response_id)] = (document, expires_at)

    async def load(self, account_id: int, response_id: str, now: datetime) -> bytes | None:
        found = self._docs.get((account_id, response_id))
        return found[0] if found is not None and found[1] > now else None

    async def delete(self, account_id: int, response_id: str) -> bool:
        return self._docs.pop((account_id, response_id), None) is not None

    async def remove_expired(self, now: datetime) -> int:
        gone = [key for key, (_, expires) in self._docs.items() if expires <= now]
        for key in gone:
            del self._docs[key]
        return len(gone)


async def sweep_forever(store: ResponseStore, every: float) -> None:
    """Remove expired responses every ``every`` seconds (reads already ignore them meanwhile)."""
    while True:
        await asyncio.sleep(every)
        try:
            removed = await store.remove_expired(utcnow())
        except Exception:  # a sweep that fails is retried at the next one
            log.exception("removing expired stored responses failed")
            continue
        if removed:
            log.info("removed %d expired stored responses", removed)
