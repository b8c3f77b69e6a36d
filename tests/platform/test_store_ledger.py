"""The group-commit ledger on a real store (SQLite and PostgreSQL): reserve, settle once, never
below zero, key spend limits, stale holds, and concurrency with one and with two writers."""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from gatewright.core.accounts import Accounts, KeyLimit, UsageFilter
from gatewright.core.clock import utcnow
from gatewright.core.errors import InsufficientCredits, InternalError, InvalidRequest
from gatewright.core.ids import request_id
from gatewright.core.ledger import LedgerWriter
from gatewright.core.ledger_rules import AccountRow, Changes, HoldRow, Locked, Reservation, decide_reserve
from gatewright.core.platform import Hold, Principal, Settlement
from gatewright.core.types import Usage
from gatewright.store import ledger as ledger_store
from gatewright.store.db import create_engine, is_sqlite
from gatewright.store.ledger import SqlLedgerStore, apply_batch
from gatewright.store.sqlite_raw import ROWS_PER_INSERT
from gatewright.store.tables import api_keys, holds, usage_days
from tests.platform.audit import assert_consistent, audit, wait_settled
from tests.platform.ledger_support import Commits, cost_of, new_principal


@pytest.fixture
async def ledger(engine: AsyncEngine) -> AsyncIterator[LedgerWriter]:
    writer = LedgerWriter(SqlLedgerStore(engine, owner="test"))
    await writer.start()
    try:
        yield writer
    finally:
        await writer.close()


async def test_reserve_then_settle_moves_money_once(
    accounts: Accounts, ledger: LedgerWriter, engine: AsyncEngine
) -> None:
    who = await new_principal(accounts, 1_000)
    hold = await ledger.reserve(who, 300, "req-1", "fake")
    account = await accounts.account(who.account_id)
    assert (account.balance, account.reserved) == (1_000, 300)

    usage = Usage(input_tokens=10, output_tokens=5, cached_tokens=4)
    assert await ledger.settle(Settlement(hold, usage, cost_of(120), "ok", "fake")) == 120
    assert await ledger.settle(Settlement(hold, usage, cost_of(120), "ok", "fake")) == 0  # a second settle is a no-op

    result = await audit(engine, who.account_id)
    assert_consistent(result, 1_000)
    assert result.balance == 880 and result.charge_rows == {"req-1": 120}
    record = result.usage["req-1"]
    assert (record.input_tokens, record.output_tokens, record.cached_tokens, record.status) == (10, 5, 4, "ok")
    assert record.key_prefix == who.prefix and record.model == "fake"
    key = await accounts.key(who.prefix)
    assert (key.period_spent, key.period_reserved, key.month_spent) == (120, 0, 120)


async def test_free_or_failed_requests_write_usage_but_no_charge(
    accounts: Accounts, ledger: LedgerWriter, engine: AsyncEngine
) -> None:
    who = await new_principal(accounts, 1_000)
    failed = await ledger.reserve(who, 500, "failed", "fake")
    assert await ledger.settle(Settlement(failed, Usage(), cost_of(0), "error", "fake")) == 0
    result = await audit(engine, who.account_id)
    assert_consistent(result, 1_000)
    assert result.balance == 1_000 and result.charge_rows == {}
    assert result.usage["failed"].status == "error" and result.usage["failed"].credits == 0


async def test_reserve_refuses_what_the_balance_cannot_cover(accounts: Accounts, ledger: LedgerWriter) -> None:
    who = await new_principal(accounts, 1_000)
    await ledger.reserve(who, 700, "a", "fake")
    with pytest.raises(InsufficientCredits) as refused:
        await ledger.reserve(who, 301, "b", "fake")  # 300 left once 700 are held
    assert refused.value.code == "insufficient_credits" and "300 available" in refused.value.message
    assert (await accounts.account(who.account_id)).reserved == 700


async def test_key_spend_limit_counts_spent_and_held(accounts: Accounts, ledger: LedgerWriter) -> None:
    # 0.0005 USD = 1,000 credits per day for this key; the account has far more.
    who = await new_principal(accounts, 1_000_000, KeyLimit("day", 0.0005))
    first = await ledger.reserve(who, 600, "a", "fake")
    with pytest.raises(InsufficientCredits) as held_too_much:
        await ledger.reserve(who, 401, "b", "fake")
    assert held_too_much.value.code == "key_limit_exceeded"
    await ledger.settle(Settlement(first, Usage(output_tokens=1), cost_of(550), "ok", "fake"))
    await ledger.reserve(who, 450, "c", "fake")  # 550 spent + 450 held = the limit exactly
    with pytest.raises(InsufficientCredits) as spent_too_much:
        await ledger.reserve(who, 1, "d", "fake")
    assert "0.00 USD" not in spent_too_much.value.message and "per day" in spent_too_much.value.message


async def test_key_spend_limit_resets_with_its_period(
    accounts: Accounts, ledger: LedgerWriter, engine: AsyncEngine
) -> None:
    who = await new_principal(accounts, 1_000_000, KeyLimit("day", 0.0005))
    hold = await ledger.reserve(who, 1_000, "a", "fake")
    await ledger.settle(Settlement(hold, Usage(output_tokens=1), cost_of(1_000), "ok", "fake"))
    with pytest.raises(InsufficientCredits):
        await ledger.reserve(who, 1, "b", "fake")
    yesterday = utcnow() - timedelta(days=1, hours=1)
    async with engine.begin() as conn:
        await conn.execute(update(api_keys).where(api_keys.c.id == who.key_id).values(period_start=yesterday))
    await ledger.reserve(who, 1_000, "c", "fake")  # a new day: the whole limit again
    key = await accounts.key(who.prefix)
    assert (key.period_spent, key.period_reserved, key.month_spent) == (0, 1_000, 1_000)


async def test_no_reset_limit_never_rolls_over(accounts: Accounts, ledger: LedgerWriter, engine: AsyncEngine) -> None:
    who = await new_principal(accounts, 1_000_000, KeyLimit("no_reset", 0.0005))
    hold = await ledger.reserve(who, 1_000, "a", "fake")
    await ledger.settle(Settlement(hold, Usage(output_tokens=1), cost_of(1_000), "ok", "fake"))
    with pytest.raises(InsufficientCredits):
        await ledger.reserve(who, 1, "b", "fake")


async def test_a_charge_above_the_hold_is_capped_at_the_hold(
    accounts: Accounts, ledger: LedgerWriter, engine: AsyncEngine
) -> None:
    # An upstream may report more tokens than the hold covers: the charge stops at the hold, so the
    # key's spend limit and the account's balance (both checked when the hold was made) hold hard.
    limit = KeyLimit("no_reset", 0.0005)  # 1,000 credits
    who = await new_principal(accounts, 1_000, limit)
    other = await ledger.reserve(who, 400, "other", "fake")
    hold = await ledger.reserve(who, 500, "big", "fake")
    assert await ledger.settle(Settlement(hold, Usage(output_tokens=99), cost_of(5_000), "ok", "fake")) == 500
    assert await ledger.settle(Settlement(other, Usage(output_tokens=1), cost_of(400), "ok", "fake")) == 400
    result = await audit(engine, who.account_id)
    assert_consistent(result, 1_000)
    assert result.balance == 100
    key = await accounts.key(who.prefix)
    assert key.period_spent == 900 <= 1_000
    assert result.usage["big"].credits == 500 and result.usage["big"].output_tokens == 99


async def test_stale_holds_are_released_unbilled(accounts: Accounts, ledger: LedgerWriter, engine: AsyncEngine) -> None:
    who = await new_principal(accounts, 1_000)
    old = await ledger.reserve(who, 300, "old", "fake")
    await ledger.reserve(who, 200, "young", "fake")
    async with engine.begin() as conn:
        await conn.execute(
            update(holds).where(holds.c.request_id == "old").values(created_at=utcnow() - timedelta(hours=2))
        )
    assert await ledger.release_stale(timedelta(hours=1)) == 1
    assert (await accounts.account(who.account_id)).reserved == 200
    assert (
        await ledger.settle(Settlement(old, Usage(output_tokens=3), cost_of(50), "ok", "fake")) == 0
    )  # released: never billed
    assert await ledger.release_stale(None) == 1  # start-up of a single-node store: all of them
    account = await accounts.account(who.account_id)
    assert (account.balance, account.reserved) == (1_000, 0)
    key = await accounts.key(who.prefix)
    assert key.period_reserved == 0
    async with engine.connect() as conn:
        statuses = {r.request_id: r.status for r in await conn.execute(select(holds))}
    assert statuses == {"old": "released", "young": "released"}


async def test_a_caller_that_leaves_during_reserve_leaves_no_hold(accounts: Accounts, ledger: LedgerWriter) -> None:
    who = await new_principal(accounts, 1_000)
    task = asyncio.create_task(ledger.reserve(who, 300, "gone", "fake"))
    await asyncio.sleep(0)  # queued, not yet written
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadline = time.monotonic() + 60  # the orphaned hold is released by the writer right after it commits
    while True:
        account = await accounts.account(who.account_id)
        if account.reserved == 0 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    assert (account.balance, account.reserved) == (1_000, 0)


async def _spend(ledger: LedgerWriter, who: Principal, request_id: str, rng: random.Random) -> tuple[str, int]:
    """One request's money: reserve a worst case, then settle at most that (or fail: nothing)."""
    worst = rng.randint(10, 200)
    try:
        hold = await ledger.reserve(who, worst, request_id, "fake")
    except InsufficientCredits:
        return "refused", 0
    await asyncio.sleep(rng.random() / 100)
    if rng.random() < 0.1:
        return "failed", await ledger.settle(Settlement(hold, Usage(), cost_of(0), "error", "fake"))
    actual = rng.randint(1, worst)
    return "ok", await ledger.settle(
        Settlement(hold, Usage(input_tokens=1, output_tokens=actual), cost_of(actual), "ok", "fake")
    )


async def test_concurrent_requests_against_a_small_balance(
    accounts: Accounts, ledger: LedgerWriter, engine: AsyncEngine
) -> None:
    start = 20_000  # enough for roughly a fifth of the 600 worst cases at once
    who = await new_principal(accounts, start)
    rng = random.Random(3)
    commits = Commits(ledger)
    outcomes = await asyncio.gather(*(_spend(ledger, who, f"r{i}", rng) for i in range(600)))
    committed = commits()
    kinds = [kind for kind, _ in outcomes]
    assert kinds.count("refused") > 0 and kinds.count("ok") > 0, kinds
    assert committed < len(outcomes), "reservations and settlements share group commits"
    result = await audit(engine, who.account_id)
    assert_consistent(result, start)
    assert result.charges == sum(charged for _, charged in outcomes)
    assert len(result.usage) == len(outcomes) - kinds.count("refused")


async def test_three_writers_on_one_store_keep_the_books(
    store_url: str, accounts: Accounts, ledger: LedgerWriter, engine: AsyncEngine
) -> None:
    # Three gateway replicas (separate engines and writer tasks, one database) spending from four
    # accounts at once: batches overlap on the same rows in every order.
    start = 8_000
    payers = [await new_principal(accounts, start) for _ in range(4)]
    others = [create_engine(store_url) for _ in range(2)]
    writers = [ledger, *(LedgerWriter(SqlLedgerStore(e, owner=f"replica-{i}")) for i, e in enumerate(others))]
    for writer in writers[1:]:
        await writer.start()
    rng = random.Random(5)
    try:
        outcomes = await asyncio.gather(
            *(_spend(writers[i % 3], payers[rng.randrange(4)], f"r{i}", rng) for i in range(600)),
        )
    finally:
        for writer in writers[1:]:
            await writer.close()
        for other in others:
            await other.dispose()
    charged = 0
    for payer in payers:
        result = await audit(engine, payer.account_id)
        assert_consistent(result, start)
        charged += result.charges
    assert charged == sum(credits for _, credits in outcomes)
    assert {kind for kind, _ in outcomes} >= {"ok", "refused"}


async def test_grants_beside_requests_keep_the_books(
    accounts: Accounts, ledger: LedgerWriter, engine: AsyncEngine
) -> None:
    # Credits added and removed (as the CLI or the billing API does, through a writer of its own)
    # while requests reserve and settle: every grant is decided on the locked row, so removals never
    # take what holds were promised and no change is lost.
    start = 5_000
    who = await new_principal(accounts, start)
    rng = random.Random(11)

    async def grant(amount: int) -> int:
        try:
            await accounts.add_credits(who.account_id, amount, "test")
        except InvalidRequest:  # a removal larger than what is not held: refused whole
            return 0
        return amount

    amounts = [rng.choice((1_000, 3_000, -500, -2_000)) for _ in range(40)]
    outcomes = await asyncio.gather(
        *(_spend(ledger, who, f"r{i}", rng) for i in range(300)), *(grant(amount) for amount in amounts)
    )
    spent = [o for o in outcomes if isinstance(o, tuple)]
    granted = sum(o for o in outcomes if isinstance(o, int))
    result = await audit(engine, who.account_id)
    assert result.reserved == 0 and result.balance >= 0 and (result.ledger_min_balance_after or 0) >= 0
    assert result.charges == sum(charged for _, charged in spent) == result.usage_credits
    assert result.balance == start + granted - result.charges == result.ledger_sum


class _Outage:
    """Fault injection: the ledger's inserts into ``table`` fail while ``failures`` is above zero.

    It wraps the one function every ledger write goes through (SQLAlchemy on PostgreSQL, the raw
    driver on SQLite), so the transaction dies mid-way exactly as on a lost connection."""

    def __init__(self, table: str, failures: int) -> None:
        self.table, self.failures = table, failures
        self._real = ledger_store._execute
        ledger_store._execute = self._maybe_fail  # type: ignore[assignment]

    def _maybe_fail(self, conn: Connection, statement: Any, rows: list[dict[str, Any]]) -> None:
        if self.failures > 0 and getattr(statement, "table", None) is not None and statement.table.name == self.table:
            self.failures -= 1
            raise ConnectionResetError("injected: connection to the store lost")
        self._real(conn, statement, rows)

    def end(self) -> None:
        self.failures = 0
        ledger_store._execute = self._real  # type: ignore[assignment]


async def test_a_failed_batch_is_retried_and_applied_once(accounts: Accounts, engine: AsyncEngine) -> None:
    who = await new_principal(accounts, 1_000)
    writer = LedgerWriter(SqlLedgerStore(engine, owner="test"), retry_delays=(0.01, 0.01, 0.01))
    await writer.start()
    outage = _Outage("usage_records", failures=2)
    try:
        hold = await writer.reserve(who, 100, "req", "fake")
        assert await writer.settle(Settlement(hold, Usage(output_tokens=2), cost_of(80), "ok", "fake")) == 80
    finally:
        outage.end()
        await writer.close()
    result = await audit(engine, who.account_id)
    assert_consistent(result, 1_000)
    assert result.charge_rows == {"req": 80}


async def test_a_settlement_outlives_a_long_outage(accounts: Accounts, engine: AsyncEngine) -> None:
    who = await new_principal(accounts, 1_000)
    writer = LedgerWriter(SqlLedgerStore(engine, owner="test"), retry_delays=(0.01,), background_retry=0.05)
    await writer.start()
    outage = _Outage("usage_records", failures=10**6)
    try:
        hold = await writer.reserve(who, 100, "req", "fake")
        with pytest.raises(InternalError):
            await writer.settle(Settlement(hold, Usage(output_tokens=2), cost_of(80), "ok", "fake"))
        assert (await accounts.account(who.account_id)).reserved == 100  # not written yet
        outage.end()
        result = await wait_settled(engine, who.account_id, within=10)
    finally:
        outage.end()
        await writer.close()
    assert_consistent(result, 1_000)
    assert result.charge_rows == {"req": 80}


def test_a_reservation_retried_after_a_lost_commit_returns_the_same_hold() -> None:
    who = Principal(account_id=1, key_id=7, prefix="abcd1234", kind="api", scopes=frozenset())
    existing = HoldRow("req", 1, 7, 50, "fake", "held")
    locked = Locked(accounts={1: AccountRow(1_000, 50)}, keys={}, holds={"req": existing})
    changes = Changes(now=utcnow())
    hold = decide_reserve(Reservation(who, 50, "req", "fake"), locked, changes)
    assert hold == Hold("req", 1, 7, "abcd1234", 50, "fake")
    assert changes.new_holds == [] and locked.accounts[1].reserved == 50  # nothing held twice


async def test_a_batch_replayed_after_a_lost_commit_changes_nothing_twice(
    accounts: Accounts, engine: AsyncEngine
) -> None:
    # The commit went through but its answer was lost: the writer replays the batch as a retry.
    who = await new_principal(accounts, 1_000)
    batch = [Reservation(who, 300, "req", "fake")]
    async with engine.begin() as conn:
        first = await conn.run_sync(apply_batch, batch, "test", False, False)
    async with engine.begin() as conn:
        replayed = await conn.run_sync(apply_batch, batch, "test", False, True)
    assert first == replayed and isinstance(first[0], Hold)
    account = await accounts.account(who.account_id)
    assert (account.balance, account.reserved) == (1_000, 300)
    settle = [Settlement(first[0], Usage(output_tokens=1), cost_of(200), "ok", "fake")]
    for retry in (False, True):
        async with engine.begin() as conn:
            await conn.run_sync(apply_batch, settle, "test", False, retry)
    result = await audit(engine, who.account_id)
    assert_consistent(result, 1_000)
    assert result.charge_rows == {"req": 200}


async def test_rows_the_ledger_writes_read_back_like_any_other(accounts: Accounts, engine: AsyncEngine) -> None:
    # On SQLite the ledger writes through the raw driver (store.sqlite_raw): its timestamps must be
    # stored in the text form SQLAlchemy writes, or date-range queries would compare unlike strings.
    who = await new_principal(accounts, 1_000)
    writer = LedgerWriter(SqlLedgerStore(engine, owner="test"))
    await writer.start()
    try:
        hold = await writer.reserve(who, 100, "req", "fake")
        await writer.settle(Settlement(hold, Usage(output_tokens=2), cost_of(80), "ok", "fake"))
    finally:
        await writer.close()
    if is_sqlite(engine):  # PostgreSQL stores timestamps as timestamps, whoever writes them
        async with engine.connect() as conn:
            stamps = [
                value
                for table in ("accounts", "ledger", "usage_records")  # the first written by SQLAlchemy
                for value in (await conn.execute(text(f"SELECT created_at FROM {table}"))).scalars()
            ]
        formats = {re.sub(r"\d", "9", value) for value in stamps}
        assert len(formats) == 1, formats
    around_now = UsageFilter(since=utcnow() - timedelta(minutes=1), until=utcnow() + timedelta(minutes=1))
    assert [r.request_id for r in await accounts.usage(who.account_id, around_now)] == ["req"]


async def test_a_batch_of_every_statement_size_writes_each_row_once(accounts: Accounts, engine: AsyncEngine) -> None:
    # On SQLite a batch's rows go in as multi-row INSERTs of 64, 16, 4 and 1 rows (store.sqlite_raw):
    # 87 settlements take each size, and two models give the day upsert two rows in one statement.
    who = await new_principal(accounts, 1_000_000)
    count = sum(ROWS_PER_INSERT) + 2
    models = ["fake", "fake-2"]
    ids = [request_id() for _ in range(count)]
    store = SqlLedgerStore(engine, owner="test")
    store.start()
    try:
        reservations = [Reservation(who, 100, rid, models[i % 2]) for i, rid in enumerate(ids)]
        held = await store.apply(reservations, retry=False)
        settlements = [
            Settlement(hold, Usage(input_tokens=i, output_tokens=2 * i), cost_of(i + 1), "ok", models[i % 2])
            for i, hold in enumerate(held)
        ]
        charged = await store.apply(settlements, retry=False)
        await store.apply(settlements, retry=True)  # a replay of the same batch charges nothing twice
    finally:
        await store.close()
    assert charged == [i + 1 for i in range(count)]
    result = await audit(engine, who.account_id)
    assert_consistent(result, 1_000_000)
    assert result.charge_rows == {rid: i + 1 for i, rid in enumerate(ids)}
    assert {rid: (r.input_tokens, r.output_tokens, r.model) for rid, r in result.usage.items()} == {
        rid: (i, 2 * i, models[i % 2]) for i, rid in enumerate(ids)
    }
    async with engine.connect() as conn:
        days = {r.model: r for r in await conn.execute(select(usage_days))}
    for parity, model in enumerate(models):
        mine = range(parity, count, 2)
        assert (days[model].requests, days[model].input_tokens, days[model].credits) == (
            len(mine),
            sum(mine),
            sum(i + 1 for i in mine),
        )
