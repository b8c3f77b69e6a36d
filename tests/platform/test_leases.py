"""Credit leases (core.ledger_leases) on a real store, SQLite and PostgreSQL: reservations in memory
against credits held in bulk, a lease that grows when exhausted, two processes contending for one
key's limit, a holder killed with a lease (its remainder back after expiry, never twice), many
requests at once on one lease, and an account disabled or a limit lowered under a live lease."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gatewright.core.accounts import Accounts, KeyLimit
from gatewright.core.errors import InsufficientCredits, PermissionDenied
from gatewright.core.ledger import LedgerWriter
from gatewright.core.ledger_leases import LeasePolicy
from gatewright.core.ledger_rules import LeaseCharge
from gatewright.core.platform import Settlement
from gatewright.core.types import Usage
from gatewright.store.db import create_engine
from gatewright.store.ledger import SqlLedgerStore, apply_batch
from gatewright.store.tables import api_keys, leases
from tests.platform.audit import assert_consistent, audit
from tests.platform.ledger_support import Commits, cost_of, new_principal

CALM = LeasePolicy(idle=60.0)  # no lease goes back idle while a test looks at it
SWEEP = timedelta(hours=1)  # a replica's sweep: holds older than this, leases past their expiry


@asynccontextmanager
async def _writer(engine: AsyncEngine, owner: str, policy: LeasePolicy = CALM) -> AsyncIterator[LedgerWriter]:
    writer = LedgerWriter(SqlLedgerStore(engine, owner=owner), leases=policy, owner=owner)
    await writer.start()
    try:
        yield writer
    finally:
        await writer.close()


async def _lease_rows(engine: AsyncEngine, account_id: int) -> list[Any]:
    async with engine.connect() as conn:
        return list(await conn.execute(select(leases).where(leases.c.account_id == account_id).order_by(leases.c.id)))


async def test_reservations_come_from_memory_until_the_lease_must_grow(accounts: Accounts, engine: AsyncEngine) -> None:
    who = await new_principal(accounts, 100_000)
    async with _writer(engine, "p1") as writer:
        commits = Commits(writer)
        first = await writer.reserve(who, 100, "r0", "fake")
        assert commits() == 1, "the first reservation takes the lease: one commit"
        # 100 needed + 8 worst cases more: 900 held, so eight more fit without a commit.
        assert (await audit(engine, who.account_id)).reserved == 900
        holds = [await writer.reserve(who, 100, f"r{i}", "fake") for i in range(1, 9)]
        assert commits() == 1, "reservations the lease covers commit nothing"
        ninth = await writer.reserve(who, 100, "r9", "fake")  # 900 in use: the lease grows
        assert commits() == 2
        for hold in [first, *holds, ninth]:
            assert await writer.settle(Settlement(hold, Usage(output_tokens=1), cost_of(60), "ok", "fake")) == 60
        assert commits() == 12, "each settlement is its own durable commit (no company waited)"
        during = await audit(engine, who.account_id)
        assert during.reserved == during.leased > 0 and during.charges == 600
    result = await audit(engine, who.account_id)
    assert_consistent(result, 100_000)
    assert result.reserved == result.leased == 0, "the lease went back at stop"
    assert result.charge_rows == {f"r{i}": 60 for i in range(10)} and result.holds == {}
    assert [(row.status, row.credits) for row in await _lease_rows(engine, who.account_id)] == [("returned", 0)]


async def test_an_exhausted_balance_refuses_only_what_it_cannot_cover(accounts: Accounts, engine: AsyncEngine) -> None:
    who = await new_principal(accounts, 1_000)
    async with _writer(engine, "p1") as writer:
        held = [await writer.reserve(who, 300, f"r{i}", "fake") for i in range(3)]  # the lease grows to 900+
        with pytest.raises(InsufficientCredits) as refused:
            await writer.reserve(who, 300, "r3", "fake")
        assert refused.value.code == "insufficient_credits"
        assert "may cost up to 300 credits" in refused.value.message
        assert "has 100 available" in refused.value.message  # the account's 100 that no lease holds
        await writer.settle(
            Settlement(held[0], Usage(output_tokens=1), cost_of(250), "ok", "fake")
        )  # 50 of it stays leased
        extra = await writer.reserve(who, 150, "r4", "fake")  # 50 unused + 100 grown
        for hold in [*held[1:], extra]:
            await writer.settle(Settlement(hold, Usage(), cost_of(0), "error", "fake"))
    result = await audit(engine, who.account_id)
    assert_consistent(result, 1_000)
    assert result.balance == 750 and result.reserved == 0


async def test_two_processes_on_one_key_never_pass_its_limit(
    store_url: str, accounts: Accounts, engine: AsyncEngine
) -> None:
    # Two gateway processes (engines and writers of their own) spend one key limited to 2,000
    # credits; each lease is a real hold in the store, so together they cannot pass the limit.
    who = await new_principal(accounts, 1_000_000, KeyLimit("no_reset", 0.001))
    other = create_engine(store_url)
    rng = random.Random(24)

    async def spend(writer: LedgerWriter, i: int) -> int:
        worst = rng.randint(50, 200)
        try:
            hold = await writer.reserve(who, worst, f"r{i}", "fake")
        except InsufficientCredits as refused:
            assert refused.code == "key_limit_exceeded"
            return 0
        await asyncio.sleep(rng.random() / 200)
        return int(await writer.settle(Settlement(hold, Usage(output_tokens=1), cost_of(worst), "ok", "fake")))

    try:
        async with _writer(engine, "p1") as first, _writer(other, "p2") as second:
            # Each process takes a lease before the crowd arrives: left to the race, the process whose
            # engine connected first could lease the whole limit alone and the contention go untested.
            openers = [await writer.reserve(who, 50, f"w{n}", "fake") for n, writer in enumerate((first, second))]
            outcomes = await asyncio.gather(*(spend((first, second)[i % 2], i) for i in range(120)))
            for writer, hold in zip((first, second), openers, strict=True):
                outcomes.append(
                    int(await writer.settle(Settlement(hold, Usage(output_tokens=1), cost_of(50), "ok", "fake")))
                )
            async with engine.connect() as conn:
                spent, reserved = (
                    await conn.execute(
                        select(api_keys.c.period_spent, api_keys.c.period_reserved).where(api_keys.c.id == who.key_id)
                    )
                ).one()
            assert spent + reserved <= 2_000, "spent and every lease together stay within the limit"
    finally:
        await other.dispose()
    result = await audit(engine, who.account_id)
    assert_consistent(result, 1_000_000)
    assert result.charges == sum(outcomes) <= 2_000
    assert sum(1 for o in outcomes if o) >= 10, "the limit was used, not starved by idle leases"
    owners = {row.id.split("-")[0] for row in await _lease_rows(engine, who.account_id)}
    assert owners == {"p1", "p2"}


async def test_a_killed_holder_s_lease_comes_back_after_expiry_and_only_once(
    accounts: Accounts, engine: AsyncEngine
) -> None:
    who = await new_principal(accounts, 10_000)
    ttl = 3.0
    dying = LedgerWriter(SqlLedgerStore(engine, owner="dead"), leases=LeasePolicy(ttl=ttl), owner="dead")
    await dying.start()
    answered = await dying.reserve(who, 200, "answered", "fake")
    await dying.reserve(who, 200, "in-flight", "fake")  # its process dies before it ends
    assert await dying.settle(Settlement(answered, Usage(output_tokens=1), cost_of(150), "ok", "fake")) == 150
    extended = time.monotonic()
    # SIGKILL: the writer stops where it is; nothing is given back.
    for task in (dying._task, dying._tending):
        assert task is not None
        task.cancel()
    await dying.store.close()
    killed = await audit(engine, who.account_id)
    assert killed.reserved == killed.leased > 0 and killed.charges == 150

    async with _writer(engine, "sweeper") as sweeper:
        await sweeper.release_stale(SWEEP)
        if time.monotonic() - extended < ttl - 0.5:  # not yet expired: the lease still holds
            assert (await audit(engine, who.account_id)).reserved == killed.reserved
        await asyncio.sleep(max(0.0, extended + ttl + 0.2 - time.monotonic()))
        await sweeper.release_stale(SWEEP)  # expired: no one extends it any more
        assert (await audit(engine, who.account_id)).reserved == 0
        await sweeper.release_stale(SWEEP)  # a second sweep finds nothing more to give back
    result = await audit(engine, who.account_id)
    assert_consistent(result, 10_000)
    assert result.balance == 10_000 - 150 and result.charge_rows == {"answered": 150}
    assert "in-flight" not in result.usage, "a request that died with its process is not billed"
    assert [row.status for row in await _lease_rows(engine, who.account_id)] == ["released"]


async def test_a_live_holder_s_lease_is_not_taken_by_a_sweep(accounts: Accounts, engine: AsyncEngine) -> None:
    who = await new_principal(accounts, 10_000)
    # Extended every 1 s while held (checked every 0.5 s): an extension may come 1.5 s late on a
    # loaded machine before the lease expires under its holder (with ttl 1.5 s: 0.75 s).
    policy = LeasePolicy(ttl=3.0, idle=60.0)
    async with _writer(engine, "alive", policy) as holder, _writer(engine, "sweeper") as sweeper:
        hold = await holder.reserve(who, 200, "long", "fake")  # a long request: 6 s, twice the ttl
        for _ in range(3):
            await asyncio.sleep(2.0)
            await sweeper.release_stale(SWEEP)
        assert await holder.settle(Settlement(hold, Usage(output_tokens=1), cost_of(120), "ok", "fake")) == 120
        assert [row.status for row in await _lease_rows(engine, who.account_id)] == ["held"]
    result = await audit(engine, who.account_id)
    assert_consistent(result, 10_000)
    assert result.charge_rows == {"long": 120}


async def test_many_requests_at_once_on_one_lease_keep_exact_books(accounts: Accounts, engine: AsyncEngine) -> None:
    start = 20_000  # roughly a fifth of the 600 worst cases at once
    who = await new_principal(accounts, start)
    rng = random.Random(7)

    async def spend(writer: LedgerWriter, i: int) -> tuple[str, int]:
        worst = rng.randint(10, 200)
        try:
            hold = await writer.reserve(who, worst, f"r{i}", "fake")
        except InsufficientCredits:
            return "refused", 0
        await asyncio.sleep(rng.random() / 100)
        if rng.random() < 0.1:
            return "failed", int(await writer.settle(Settlement(hold, Usage(), cost_of(0), "error", "fake")))
        actual = rng.randint(1, worst)
        return "ok", int(
            await writer.settle(Settlement(hold, Usage(output_tokens=actual), cost_of(actual), "ok", "fake"))
        )

    async with _writer(engine, "p1") as writer:
        commits = Commits(writer)
        outcomes = await asyncio.gather(*(spend(writer, i) for i in range(600)))
        committed = commits()
    kinds = [kind for kind, _ in outcomes]
    assert kinds.count("ok") > 100 and kinds.count("refused") > 0, kinds
    assert committed < len(outcomes) - kinds.count("refused"), "settlements of concurrent requests share commits"
    result = await audit(engine, who.account_id)
    assert_consistent(result, start)
    assert result.charges == sum(charged for _, charged in outcomes)
    assert len(result.usage) == len(outcomes) - kinds.count("refused")


async def test_a_disabled_account_or_a_lowered_limit_counts_at_once_under_a_lease(
    accounts: Accounts, engine: AsyncEngine
) -> None:
    who = await new_principal(accounts, 100_000, KeyLimit("no_reset", 0.05))  # 100,000 credits
    async with _writer(engine, "p1") as writer:
        hold = await writer.reserve(who, 100, "r0", "fake")  # a lease of 900: room for more in memory
        await writer.settle(Settlement(hold, Usage(output_tokens=1), cost_of(100), "ok", "fake"))
        prefix = who.prefix
        await accounts.update_key(prefix, who.account_id, {"limit": KeyLimit("no_reset", 0.0001)})  # 200
        with pytest.raises(InsufficientCredits) as over:
            await writer.reserve(who, 150, "r1", "fake")  # the lease had room; the new limit has 100
        assert over.value.code == "key_limit_exceeded"
        assert await writer.reserve(who, 100, "r2", "fake")
        await accounts.update_account(who.account_id, {"disabled": True})
        with pytest.raises(PermissionDenied) as disabled:
            await writer.reserve(who, 10, "r3", "fake")
        assert disabled.value.code == "account_disabled"
    result = await audit(engine, who.account_id)
    assert_consistent(result, 100_000)
    assert result.charge_rows == {"r0": 100}


async def test_a_lease_charge_replayed_after_a_lost_commit_charges_once(
    accounts: Accounts, engine: AsyncEngine
) -> None:
    who = await new_principal(accounts, 10_000)
    async with _writer(engine, "p1") as writer:
        hold = await writer.reserve(who, 300, "req", "fake")
        lease_id = next(iter(writer.leases._open.values())).id  # type: ignore[union-attr]
        charge = [LeaseCharge(lease_id, Settlement(hold, Usage(output_tokens=1), cost_of(200), "ok", "fake"), SWEEP)]
        for retry in (False, True):  # the commit went through, its answer was lost: replayed
            async with engine.begin() as conn:
                assert await conn.run_sync(apply_batch, charge, "test", False, retry) == [200]
        writer.leases._open.pop("req")  # type: ignore[union-attr]  # settled above, by hand
        writer._unsettled.discard("req")
    result = await audit(engine, who.account_id)
    assert_consistent(result, 10_000)
    assert result.charge_rows == {"req": 200}
