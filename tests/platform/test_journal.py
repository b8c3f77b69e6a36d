"""The settlement journal (store.journal): a finished request's charge is in a local file before its
answer ends and committed in groups after. A gateway killed between the two loses nothing: the next
start applies what the journal holds, once, before it serves, and gives back the dead process's
credit leases; lines already committed, or applied by another adopter, charge nothing twice; a
live process's journal is never adopted; a torn or foreign line is skipped; the files stay small."""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gatewright.core.accounts import Accounts
from gatewright.core.ledger import LedgerWriter
from gatewright.core.ledger_leases import LeasePolicy
from gatewright.core.ledger_rules import LeaseCharge
from gatewright.core.platform import Hold, Settlement
from gatewright.core.types import Usage
from gatewright.store.db import create_engine
from gatewright.store.journal import SUFFIX, SettlementJournal, encode
from gatewright.store.ledger import SqlLedgerStore
from gatewright.store.tables import accounts
from gatewright.wiring import HOLD_TTL
from tests.platform.audit import assert_consistent, audit
from tests.platform.conftest import UNLIMITED, sqlite_url
from tests.platform.ledger_support import cost_of, new_principal
from tests.support.app import FAKE_CATALOG
from tests.support.procs import Gateway, journal_request_ids, start_gateway

START = 20_000_000  # the first start's credits (the default)
TTL = timedelta(seconds=30)
BODY = {"model": "fake", "messages": [{"role": "user", "content": "one two three four"}], "max_tokens": 4}


def _usage_credits(db: Path, request_id: str) -> list[int]:
    with sqlite3.connect(db) as conn:
        return [row[0] for row in conn.execute("SELECT credits FROM usage_records WHERE request_id = ?", (request_id,))]


async def _until(check: Callable[[], object], within: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def _answered_and_committed(gateway: Gateway, db: Path) -> httpx.Response:
    """One request answered, and its charge in the store (its lease taken)."""
    headers = {"authorization": f"Bearer {gateway.api_key}"}
    answer = gateway.http.post("/v1/chat/completions", json=BODY, headers=headers)
    assert answer.status_code == 200, answer.text
    await _until(lambda: _usage_credits(db, answer.headers["x-request-id"]))
    return answer


async def test_a_gateway_killed_before_its_commit_loses_no_charge(tmp_path: Path) -> None:
    data = tmp_path / "gateway"
    db = data / "gatewright.db"
    gateway = start_gateway(data, catalog=FAKE_CATALOG, env=UNLIMITED)
    try:
        headers = {"authorization": f"Bearer {gateway.api_key}"}
        first = await _answered_and_committed(gateway, db)  # its lease grew: the second needs no commit to start
        # Another connection holds the store's write lock: the gateway's writer cannot commit.
        lock = sqlite3.connect(db, isolation_level=None, timeout=30)
        try:
            lock.execute("BEGIN IMMEDIATE")
            second = gateway.http.post("/v1/chat/completions", json=BODY, headers=headers)
            assert second.status_code == 200, second.text
            request_id = second.headers["x-request-id"]
            told = second.json()["meta"]["usage"]["credits_used"]
            assert told > 0
            assert _usage_credits(db, request_id) == [], "not committed: the lock holds the writer"
            assert request_id in journal_request_ids(data), "answered, so in the journal"
            gateway.stop(signal.SIGKILL)
        finally:
            lock.rollback()
            lock.close()
        assert _usage_credits(db, request_id) == []
    finally:
        gateway.stop()

    again = start_gateway(data, catalog=FAKE_CATALOG, env=UNLIMITED)
    try:
        # Applied before the restarted gateway answered its first health check.
        assert _usage_credits(db, request_id) == [told]
        assert journal_request_ids(data) == []
        engine = create_engine(sqlite_url(again))
        try:
            books = await audit(engine, 1)
        finally:
            await engine.dispose()
        assert_consistent(books, START)
        assert START - books.balance == told + first.json()["meta"]["usage"]["credits_used"]
        assert "applied 1 settlements a stopped process left in its journal" in again.log()
    finally:
        again.stop()


async def test_a_killed_process_s_leases_come_back_as_its_journal_is_adopted(tmp_path: Path) -> None:
    """A gateway process killed with credits leased, its charges committed (its journal empty).
    The process that adopts the journal (a worker that replaces it, as it starts; another one's
    sweep) closes the dead process's leases at once: their credits do not stay reserved until the
    leases expire. (A lease with a charge in the journal expires as the charge is applied.)"""
    data = tmp_path / "gateway"
    db = data / "gatewright.db"
    gateway = start_gateway(data, catalog=FAKE_CATALOG, env=UNLIMITED)
    try:
        answer = await _answered_and_committed(gateway, db)
        await _until(lambda: journal_request_ids(data) == [])
        gateway.stop(signal.SIGKILL)
    finally:
        gateway.stop()
    engine = create_engine(f"sqlite+aiosqlite:///{db}")
    try:
        async with engine.connect() as conn:
            account_id = (await conn.execute(select(accounts.c.id).where(accounts.c.name == "default"))).scalar_one()
        before = await audit(engine, account_id)
        assert before.leased > 0 and before.reserved == before.leased, "the killed gateway's lease holds credits"
        # As a worker of a gateway of several processes starts (other processes' holds may be live).
        async with _journaled_writer(engine, data / "journal", "replacement") as replacement:
            await replacement.release_stale(HOLD_TTL)
        after = await audit(engine, account_id)
    finally:
        await engine.dispose()
    assert after.leased == 0 and after.reserved == 0, "given back now, not when the lease expires"
    assert_consistent(after, START)
    assert START - after.balance == answer.json()["meta"]["usage"]["credits_used"]
    assert list((data / "journal").glob(f"*{SUFFIX}")) == [], "the dead process's journal went"


@asynccontextmanager
async def _journaled_writer(engine: AsyncEngine, directory: Path, owner: str) -> AsyncIterator[LedgerWriter]:
    writer = LedgerWriter(
        SqlLedgerStore(engine, owner=owner),
        leases=LeasePolicy(idle=60.0),
        owner=owner,
        journal=SettlementJournal(directory, owner),
    )
    await writer.start()
    try:
        yield writer
    finally:
        await writer.close()


async def test_lines_applied_before_charge_once(accounts: Accounts, engine: AsyncEngine, tmp_path: Path) -> None:
    """A process killed after its commit and before its journal was emptied, and two adopters of
    one journal: every line finds its request billed and charges nothing more."""
    who = await new_principal(accounts, 10_000)
    journal = tmp_path / "journal"
    async with _journaled_writer(engine, journal, "p1") as writer:
        held = [await writer.reserve(who, 100, f"r{i}", "fake") for i in range(3)]
        settlements = [Settlement(hold, Usage(output_tokens=1), cost_of(70), "ok", "fake") for hold in held]
        for settlement in settlements:
            assert await writer.settle(settlement) == 70  # told at once: the journal holds it
        await writer.flush()
        assert journal_request_ids(tmp_path) == [], "committed lines are emptied out"
    # What a process killed between its commit and the emptying would have left, twice over.
    lines = [encode(LeaseCharge(f"p1-{who.key_id}-1", settlement, TTL)) for settlement in settlements]
    (journal / f"dead-000001{SUFFIX}").write_bytes(b"".join(lines))
    (journal / f"dead-000002{SUFFIX}").write_bytes(b"".join(lines[:2]) + lines[2][:-9])  # torn at the end
    async with _journaled_writer(engine, journal, "p2") as adopter:
        assert await adopter.apply_journals() == 5
    result = await audit(engine, who.account_id)
    assert_consistent(result, 10_000)
    assert result.charge_rows == {"r0": 70, "r1": 70, "r2": 70}
    assert journal_request_ids(tmp_path) == []


async def test_a_live_process_s_journal_is_not_adopted(accounts: Accounts, engine: AsyncEngine, tmp_path: Path) -> None:
    who = await new_principal(accounts, 10_000)
    journal = tmp_path / "journal"
    async with _journaled_writer(engine, journal, "live") as live:
        hold = await live.reserve(who, 100, "r-live", "fake")
        live_journal = live.journal
        assert isinstance(live_journal, SettlementJournal)
        # Its line, written as a settlement would be, stays uncommitted while another process sweeps.
        live_journal.append(LeaseCharge("x", Settlement(hold, Usage(), cost_of(10), "ok", "fake"), TTL))
        async with _journaled_writer(engine, journal, "other") as other:
            assert await other.apply_journals() == 0, "its holder lives: its lock says so"
            assert (await audit(engine, who.account_id)).leased > 0, "and its lease stays held"
        assert journal_request_ids(tmp_path) == ["r-live"]


def test_a_process_s_leases_wait_for_its_last_segment(tmp_path: Path) -> None:
    """Segments are named after their process; its leases are closed only once no segment of it is
    left (another adopter may still be applying one), and another owner's name never matches."""
    for name in ("dead-000001", "dead-000002", "dead-x-000001", "deadbeef-000001"):
        (tmp_path / f"{name}{SUFFIX}").write_bytes(b"")
    journal = SettlementJournal(tmp_path, "adopter")
    other_adopter = os.open(tmp_path / f"dead-000002{SUFFIX}", os.O_RDONLY)
    fcntl.flock(other_adopter, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        adopted = journal.adopt()
        assert sorted(a.owner for a in adopted) == ["dead", "dead-x", "deadbeef"]
        for segment in adopted:
            segment.finish()
        assert journal.has_segments("dead"), "its second segment is still another adopter's"
        assert not journal.has_segments("dead-x") and not journal.has_segments("deadbeef")
        assert journal.has_segments("adopter"), "a live process has its own"
    finally:
        os.close(other_adopter)
    (tmp_path / f"dead-000002{SUFFIX}").unlink()  # that adopter finished
    assert not journal.has_segments("dead")
    journal.close()


def test_a_segment_is_emptied_once_committed_and_a_full_one_sealed(tmp_path: Path) -> None:
    journal = SettlementJournal(tmp_path, "p", segment_bytes=400)
    settlement = Settlement(
        Hold("r", 1, 1, "gw-", 100, "m"), Usage(input_tokens=3, output_tokens=2), cost_of(50), "ok", "m"
    )
    charge = LeaseCharge("lease", settlement, TTL)
    assert 134 <= len(encode(charge)) < 200  # so three lines pass 400 bytes, two do not
    tickets = [journal.append(charge) for _ in range(4)]
    segments = sorted(tmp_path.glob(f"*{SUFFIX}"))
    assert len(segments) == 2, "the first segment passed 400 bytes and was sealed"
    for ticket in tickets:
        journal.committed(ticket)
    assert sorted(tmp_path.glob(f"*{SUFFIX}")) == [segments[1]], "the sealed one went once all was committed"
    assert segments[1].read_bytes() == b""
    journal.close()
    assert list(tmp_path.glob(f"*{SUFFIX}")) == []


async def test_journals_whose_apply_fails_are_left_for_the_next_sweep(
    accounts: Accounts, engine: AsyncEngine, tmp_path: Path
) -> None:
    who = await new_principal(accounts, 10_000)
    journal = tmp_path / "journal"
    hold = Hold("r-left", who.account_id, who.key_id, who.prefix, 100, "fake")
    line = encode(LeaseCharge("gone", Settlement(hold, Usage(output_tokens=1), cost_of(40), "ok", "fake"), TTL))
    journal.mkdir()
    for name in ("dead-a", "dead-b"):
        (journal / f"{name}-000001{SUFFIX}").write_bytes(line)
    async with _journaled_writer(engine, journal, "failing") as failing:
        apply = failing.store.apply

        async def down(*args: object, **kwargs: object) -> list[object]:
            raise ConnectionError("the store is down")

        failing.store.apply = down  # type: ignore[method-assign]
        with pytest.raises(ConnectionError):
            await failing.apply_journals()
        failing.store.apply = apply  # type: ignore[method-assign]
        # Both files stay, and neither is locked by the failed adopter: another process takes them.
        async with _journaled_writer(engine, journal, "next") as following:
            assert await following.apply_journals() == 2
    result = await audit(engine, who.account_id)
    assert result.charge_rows == {"r-left": 40}, "two lines of one request charge it once"
    assert journal_request_ids(tmp_path) == []


def test_a_new_segment_is_never_seen_unlocked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process's sweep at the worst instant (just after a segment's file is made) finds
    nothing to adopt: a live process's segment is locked before it has its name."""
    adopter = SettlementJournal(tmp_path, "adopter")
    adopted = []
    real_open = os.open

    def open_then_sweep(path: Any, flags: int, mode: int = 0o777) -> int:
        fd = real_open(path, flags, mode)
        if flags & os.O_CREAT:
            adopted.extend(adopter.adopt())
        return fd

    monkeypatch.setattr(os, "open", open_then_sweep)
    journal = SettlementJournal(tmp_path, "new", segment_bytes=100)
    hold = Hold("r", 1, 1, "gw-", 100, "m")
    journal.append(LeaseCharge("lease", Settlement(hold, Usage(), cost_of(5), "ok", "m"), TTL))  # seals it: a second
    assert adopted == []
    assert journal.has_segments("new") and len(list(tmp_path.glob(f"new-*{SUFFIX}"))) == 2
    monkeypatch.undo()
    journal.close()
    adopter.close()
