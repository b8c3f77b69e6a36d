"""What a settlement costs the ledger's writer on SQLite (issue 24), on a store that already holds
``--rows`` usage records and ledger rows: request ids in time order (``core.ids.request_id``) or
random (as before), and a batch's rows written as multi-row INSERTs (``store.sqlite_raw``) or one
statement run per row (as before). The real ``SqlLedgerStore.apply`` commits batches of credit-lease
charges, as the gateway's writer does under load, on a fresh copy of a filled store for each run.

Per settlement: the CPU time of the commits and their threads' voluntary context switches, and
wall time per batch. A batch commits on the event loop's thread when the file's write lock is free
(``store.ledger``; measured there with ``time.thread_time`` around each commit, during which
nothing else runs on that thread), else on the ledger's worker thread (measured from ``/proc``).
Each runs twice: with the event loop idle while it waits, and with the event loop busy running
Python (as a gateway under load is). The busy loop mattered while every commit ran on the worker
thread: each time that thread gave up the GIL (each statement run does) it had to wait to get it
back. Runs made before commits moved to the loop (``ledger-rows-20261204.json``) measured the
worker thread alone. The combinations alternate
within each repetition, so a busy machine's drift reaches them alike. The two ways of writing are
two functions of the running code: "a statement per row" runs ``executemany`` of the one-row
INSERT, which is what ``sqlite_raw.execute_many`` did before.

    PYTHONPATH=. python -m bench.ledger_rows [--rows 0,1000000] [--batch 128] [--batches 150] [--reps 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import timedelta
from pathlib import Path
from typing import Any

from gatewright.core.accounts import Accounts
from gatewright.core.ids import request_id
from gatewright.core.keys import principal_of
from gatewright.core.ledger_rules import LeaseCharge, LeaseGrow
from gatewright.core.platform import Hold, Principal, Settlement
from gatewright.core.types import Cost, Usage
from gatewright.store import sqlite_raw
from gatewright.store.accounts import SqlAccountStore
from gatewright.store.db import create_engine, migrate
from gatewright.store.ledger import SqlLedgerStore
from gatewright.wiring import ledger_writer

MODEL = "bench-model"
LEASE = "bench-lease"
TTL = timedelta(hours=1)
LOOPS = ("idle", "busy")


def random_request_id() -> str:
    """The request id gatewright made before (random from the first character)."""
    return "req_" + os.urandom(12).hex()


IDS: dict[str, Callable[[], str]] = {"time-ordered ids": request_id, "random ids": random_request_id}


@contextmanager
def statement_per_row() -> Iterator[None]:
    """``sqlite_raw`` writing each row with a statement run of its own (its behaviour before)."""

    def one_by_one(cursor: Any, statement: Any, keys: tuple[str, ...], rows: Any) -> None:
        cursor.executemany(sqlite_raw.sql_of(statement, keys), rows)

    original = sqlite_raw._insert_rows
    sqlite_raw._insert_rows = one_by_one
    try:
        yield
    finally:
        sqlite_raw._insert_rows = original


WRITES: dict[str, Callable[[], Any]] = {"multi-row INSERTs": nullcontext, "a statement per row": statement_per_row}


async def make_store(path: Path) -> Principal:
    """A migrated store at ``path`` with one funded account, its key and a lease of it."""
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    await migrate(engine)
    writer = ledger_writer(engine, owner="bench")
    try:
        accounts = Accounts(SqlAccountStore(engine), writer, None)
        account_id = await accounts.create_account("bench", 10**15)
        principal = principal_of((await accounts.create_key(account_id, "api")).row)
    finally:
        await writer.close()
    store = SqlLedgerStore(engine, owner="bench")
    try:
        await store.apply([LeaseGrow(LEASE, principal, 10**14, 0, 10**14, TTL)], retry=False)
    finally:
        await store.close()
        await engine.dispose()
    return principal


def fill(path: Path, principal: Principal, rows: int, new_id: Callable[[], str]) -> None:
    """``rows`` usage records and charge rows of the account, as settled traffic leaves them."""
    if not rows:
        return
    ids = [new_id() for _ in range(rows)]
    if new_id is request_id:  # earlier traffic: time-ordered ids from before now
        start = time.time_ns() // 1_000_000 - rows
        ids = [f"req_{start + n:012x}{rid[16:]}" for n, rid in enumerate(ids)]
    stamp = "2026-12-01 00:00:00.000000"
    db = sqlite3.connect(path)
    with db:
        db.executemany(
            "INSERT INTO ledger (account_id, key_id, request_id, kind, credits, balance_after, note, created_at)"
            " VALUES (?, ?, ?, 'charge', -7, 0, ?, ?)",
            ((principal.account_id, principal.key_id, rid, MODEL, stamp) for rid in ids),
        )
        db.executemany(
            "INSERT INTO usage_records (request_id, account_id, key_id, key_prefix, model, input_tokens,"
            " cached_tokens, output_tokens, reasoning_tokens, credits, usd, status, estimated, created_at)"
            " VALUES (?, ?, ?, ?, ?, 100, 0, 20, 0, 7, 0.0000035, 'ok', 0, ?)",
            ((rid, principal.account_id, principal.key_id, principal.prefix, MODEL, stamp) for rid in ids),
        )
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def fresh_copy(source: Path, path: Path) -> Path:
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    shutil.copy(source, path)
    return path


def charges(principal: Principal, size: int, new_id: Callable[[], str]) -> list[LeaseCharge]:
    out = []
    for n in range(size):
        hold = Hold(new_id(), principal.account_id, principal.key_id, principal.prefix, 1_000, MODEL)
        settlement = Settlement(hold, Usage(100 + n, 20), Cost(7, 0.0000035), "ok", MODEL, "openai", 12)
        out.append(LeaseCharge(LEASE, settlement, TTL))
    return out


def thread_counters(thread: threading.Thread) -> tuple[float, int]:
    """CPU seconds and voluntary context switches of one of this process's threads."""
    task = Path(f"/proc/self/task/{thread.native_id}")
    fields = (task / "stat").read_text().rpartition(")")[2].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    status = dict(line.split(":\t") for line in (task / "status").read_text().splitlines() if ":\t" in line)
    return cpu, int(status["voluntary_ctxt_switches"])


async def busy_loop(stop: asyncio.Event) -> None:
    """Python work in small steps on the event loop, as requests keep a gateway's loop busy."""
    while not stop.is_set():
        sum(range(300))
        await asyncio.sleep(0)


async def run_one(
    path: Path, principal: Principal, new_id: Callable[[], str], batch: int, batches: int, busy: bool
) -> dict:
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    store = SqlLedgerStore(engine, owner="bench")
    store.start()
    stop = asyncio.Event()
    try:
        await store.apply(charges(principal, batch, new_id), retry=False)  # connected, statements cached
        work = [charges(principal, batch, new_id) for _ in range(batches)]
        spinner = asyncio.create_task(busy_loop(stop)) if busy else None
        worker = next(t for t in threading.enumerate() if t.name.startswith("ledger"))
        loop_thread, on_loop_cpu, on_loop_switches = threading.current_thread(), 0.0, 0
        (cpu, switches), wall = thread_counters(worker), time.perf_counter()
        for ops in work:
            committed_on_loop, (_, loop_switches) = store.commits_on_loop, thread_counters(loop_thread)
            began = time.thread_time()
            await store.apply(ops, retry=False)
            if store.commits_on_loop > committed_on_loop:  # committed right here, nothing else in between
                on_loop_cpu += time.thread_time() - began
                on_loop_switches += thread_counters(loop_thread)[1] - loop_switches
        (cpu_after, switches_after), wall = thread_counters(worker), time.perf_counter() - wall
        stop.set()
        if spinner is not None:
            await spinner
    finally:
        await store.close()
        await engine.dispose()
    settled = batch * batches
    return {
        "cpu_us_per_settlement": 1e6 * (cpu_after - cpu + on_loop_cpu) / settled,
        "switches_per_settlement": (switches_after - switches + on_loop_switches) / settled,
        "wall_ms_per_batch": 1e3 * wall / batches,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", default="0,1000000", help="rows already in the store, comma-separated")
    parser.add_argument("--batch", type=int, default=128, help="settlements a commit (the gateway's batches at c16)")
    parser.add_argument("--batches", type=int, default=150)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "empty.db"
        principal = await make_store(base)
        for rows in (int(n) for n in args.rows.split(",")):
            filled = {}
            for ids, new_id in IDS.items():
                filled[ids] = Path(tmp) / f"filled-{rows}-{ids.split()[0]}.db"
                shutil.copy(base, filled[ids])
                started = time.perf_counter()
                fill(filled[ids], principal, rows, new_id)
                print(f"filled {rows:,} rows with {ids} in {time.perf_counter() - started:.0f} s", flush=True)
            for rep in range(args.reps):
                for loop in LOOPS:
                    for ids, new_id in IDS.items():
                        for writes, mode in WRITES.items():
                            path = fresh_copy(filled[ids], Path(tmp) / "run.db")
                            with mode():
                                got = await run_one(path, principal, new_id, args.batch, args.batches, loop == "busy")
                            case = {"rows": rows, "loop": loop, "ids": ids, "writes": writes}
                            results.append({**case, "rep": rep, **got})
                            print(
                                f"rows {rows:>9,}  rep {rep}  loop {loop:4s}  {ids:17s} {writes:20s} "
                                f"{got['cpu_us_per_settlement']:6.1f} µs CPU  "
                                f"{got['switches_per_settlement']:5.2f} switches a settlement  "
                                f"{got['wall_ms_per_batch']:6.2f} ms a batch",
                                flush=True,
                            )
    print(f"\nmedians ({args.reps} repetitions, batches of {args.batch}), the commits':")
    print("| rows already stored | event loop | request ids | rows written as | CPU µs a settlement |")
    print("|---|---|---|---|---|")
    cells = {(r["rows"], r["loop"], r["ids"], r["writes"]) for r in results}
    for rows, loop, ids, writes in sorted(cells, key=lambda c: (c[0], LOOPS.index(c[1]), c[2], c[3])):
        mine = [r for r in results if (r["rows"], r["loop"], r["ids"], r["writes"]) == (rows, loop, ids, writes)]
        med = {
            name: statistics.median(r[name] for r in mine) for name in mine[0] if name.endswith(("settlement", "batch"))
        }
        print(
            f"| {rows:,} | {loop} | {ids} | {writes} | {med['cpu_us_per_settlement']:.1f} "
            f"({med['switches_per_settlement']:.2f} switches, {med['wall_ms_per_batch']:.2f} ms a batch) |"
        )
    if args.json:
        args.json.write_text(json.dumps({"batch": args.batch, "batches": args.batches, "runs": results}, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
