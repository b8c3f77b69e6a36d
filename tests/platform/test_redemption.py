"""A redemption code pays out exactly once, whoever redeems it at the same moment: many redeemers
through two stores opened side by side (two replicas' connections and ledger writers), on SQLite
and on PostgreSQL; and a grant never races a settlement (the balance adds up exactly)."""

from __future__ import annotations

import asyncio
import itertools

from sqlalchemy.ext.asyncio import AsyncEngine

from gatewright.core.errors import Conflict
from gatewright.store.db import create_engine
from tests.support.accounts import accounts_on


async def test_a_code_pays_out_once_across_two_replicas(engine: AsyncEngine, store_url: str) -> None:
    second = create_engine(store_url)  # the other replica's connections
    try:
        async with accounts_on(engine) as one, accounts_on(second) as two:
            ids = [await one.create_account(f"team-{i}", 0) for i in range(4)]
            codes = await one.mint_codes(1_234, 3, None, "test", "operator:test")
            for made in codes:
                calls = [
                    replica.redeem(account_id, made.code, "test")
                    for replica in (one, two)
                    for account_id in ids
                    for _ in range(5)
                ]
                outcomes = await asyncio.gather(*calls, return_exceptions=True)
                assert sum(1 for o in outcomes if o == 1_234) == 1, outcomes
                assert all(isinstance(o, Conflict) and o.code == "code_redeemed" for o in outcomes if o != 1_234)
            balances = [(await one.account(account_id)).balance for account_id in ids]
            assert sum(balances) == 3 * 1_234
            entries = [e for account_id in ids for e in await one.ledger_entries(account_id)]
            assert sorted((e.kind, e.credits) for e in entries) == [("redeem", 1_234)] * 3
            listed = await two.codes()
            assert all(c.redeemed_at is not None and c.redeemed_by in ids for c in listed)
    finally:
        await second.dispose()


async def test_grants_and_removals_from_two_replicas_add_up(engine: AsyncEngine, store_url: str) -> None:
    second = create_engine(store_url)
    try:
        async with accounts_on(engine) as one, accounts_on(second) as two:
            account_id = await one.create_account("team", 1_000_000)
            calls = [
                replica.add_credits(account_id, amount, "test", "operator:test")
                for replica in (one, two)
                for amount in (700, -300) * 10
            ]
            await asyncio.gather(*calls)
            account = await two.account(account_id)
            assert account.balance == 1_000_000 + 2 * 10 * 400
            entries = await one.ledger_entries(account_id, limit=100)
            assert len(entries) == 41 and all(e.actor == "operator:test" for e in entries[:40])
            # Each entry's balance_after follows from the one before: no grant was lost in a race.
            ordered = sorted(entries, key=lambda e: e.id)
            for before, after in itertools.pairwise(ordered):
                assert after.balance_after == before.balance_after + after.credits
    finally:
        await second.dispose()
