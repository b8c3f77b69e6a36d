"""The management side (accounts, keys, credits) over a store, opened as the CLI opens it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncEngine

from gatewright.core.accounts import Accounts
from gatewright.core.keys import Authenticator
from gatewright.store.accounts import SqlAccountStore
from gatewright.wiring import ledger_writer


@asynccontextmanager
async def accounts_on(engine: AsyncEngine, authenticator: Authenticator | None = None) -> AsyncIterator[Accounts]:
    """Grants go through a ledger writer of its own (one transaction each), closed on exit."""
    ledger = ledger_writer(engine, owner="test")
    try:
        yield Accounts(SqlAccountStore(engine), ledger, authenticator)
    finally:
        await ledger.close()
