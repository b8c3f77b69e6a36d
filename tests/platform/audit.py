"""Reading a store's money back: every invariant the ledger promises, as numbers a test compares."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gatewright.store.tables import accounts, holds, ledger, usage_records


@dataclass
class Audit:
    balance: int
    reserved: int
    ledger_sum: int  # every balance change of the account, signed
    charges: int  # credits charged by requests (positive)
    ledger_min_balance_after: int | None
    usage_credits: int
    usage: dict[str, Any] = field(default_factory=dict)  # request_id → usage row
    holds: dict[str, str] = field(default_factory=dict)  # request_id → status
    charge_rows: dict[str, int] = field(default_factory=dict)  # request_id → credits charged


async def audit(engine: AsyncEngine, account_id: int) -> Audit:
    async with engine.connect() as conn:
        account = (await conn.execute(select(accounts).where(accounts.c.id == account_id))).one()
        rows = list(await conn.execute(select(ledger).where(ledger.c.account_id == account_id)))
        usage = list(await conn.execute(select(usage_records).where(usage_records.c.account_id == account_id)))
        held = list(await conn.execute(select(holds).where(holds.c.account_id == account_id)))
    charges = [r for r in rows if r.kind == "charge"]
    return Audit(
        balance=account.balance,
        reserved=account.reserved,
        ledger_sum=sum(r.credits for r in rows),
        charges=-sum(r.credits for r in charges),
        ledger_min_balance_after=min((r.balance_after for r in rows), default=None),
        usage_credits=sum(r.credits for r in usage),
        usage={r.request_id: r for r in usage},
        holds={r.request_id: r.status for r in held},
        charge_rows={r.request_id: -r.credits for r in charges},
    )


async def wait_settled(engine: AsyncEngine, account_id: int, within: float = 30.0) -> Audit:
    """The audit once no hold of the account is open any more (streams settle after they close)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        async with engine.connect() as conn:
            open_holds = (
                await conn.execute(
                    select(func.count())
                    .select_from(holds)
                    .where(holds.c.account_id == account_id, holds.c.status == "held")
                )
            ).scalar_one()
        if open_holds == 0:
            return await audit(engine, account_id)
        if loop.time() > deadline:
            raise AssertionError(f"{open_holds} holds still open after {within}s")
        await asyncio.sleep(0.1)


def assert_consistent(result: Audit, start_balance: int) -> None:
    """The ledger's promises, checked together."""
    assert result.reserved == 0, "every hold was settled, so nothing stays reserved"
    assert result.balance >= 0 and (result.ledger_min_balance_after or 0) >= 0, "balance went below zero"
    assert start_balance - result.balance == result.charges == result.usage_credits
    assert result.ledger_sum == result.balance
    assert set(result.holds.values()) <= {"settled"}, "a hold was left open or released"
    assert set(result.usage) == set(result.holds), "each held request has exactly one usage record"
    assert set(result.charge_rows) <= set(result.usage)
    for request_id, credits in result.charge_rows.items():
        assert result.usage[request_id].credits == credits
