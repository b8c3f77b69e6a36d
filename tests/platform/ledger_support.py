"""What the ledger's tests share (test_store_ledger, test_leases): a funded key and a price."""

from __future__ import annotations

from gatewright.core.accounts import Accounts, KeyLimit
from gatewright.core.keys import principal_of
from gatewright.core.ledger import LedgerWriter
from gatewright.core.platform import Principal
from gatewright.core.types import Cost
from gatewright.store.ledger import SqlLedgerStore


async def new_principal(accounts: Accounts, credits: int, limit: KeyLimit | None = None) -> Principal:
    """A new account with ``credits`` and one API key (under ``limit``), as the key's principal."""
    account_id = await accounts.create_account("acme", credits)
    made = await accounts.create_key(account_id, "api", limit=limit)
    return principal_of(made.row)


def cost_of(credits: int) -> Cost:
    return Cost(credits, credits / 2_000_000)


def ledger_store_of(writer: LedgerWriter) -> SqlLedgerStore:
    assert isinstance(writer.store, SqlLedgerStore)
    return writer.store


class Commits:
    """How many transactions the writer's store committed since this was made (every driver
    counts its own: the SQLite fast path commits on the raw connection, beside SQLAlchemy)."""

    def __init__(self, writer: LedgerWriter) -> None:
        self._store = ledger_store_of(writer)
        self._start = self._store.commits

    def __call__(self) -> int:
        return self._store.commits - self._start
