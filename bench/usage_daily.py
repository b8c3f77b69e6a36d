"""How long the usage-by-day read takes on 1,000,000 usage rows (issue 17: "fast enough to draw a
chart"). Fills a fresh SQLite store (or ``--url`` PostgreSQL) with rows spread over 30 days, 20
accounts, 5 models and 3 keys per account, sums them into ``usage_days`` as migration 0005 does
(the ledger's writer keeps that table as it settles), then times ``SqlAccountStore.usage_daily``
for one account and across accounts (the operator's view), each the median of 5 runs.

    PYTHONPATH=. python -m bench.usage_daily [--rows 1000000] [--url postgresql+asyncpg://…]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import insert, text

from gatewright.core.clock import utcnow
from gatewright.store.accounts import SqlAccountStore
from gatewright.store.db import create_engine, migrate
from gatewright.store.tables import accounts, usage_records

ACCOUNTS, MODELS, KEYS = 20, 5, 3


async def fill(engine: object, rows: int) -> None:
    now = utcnow()
    async with engine.begin() as conn:  # type: ignore[attr-defined]
        await conn.execute(
            insert(accounts),
            [
                {
                    "name": f"a{i}",
                    "balance": 0,
                    "reserved": 0,
                    "low_balance_threshold": 0,
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(ACCOUNTS)
            ],
        )
        batch = []
        for n in range(rows):
            batch.append(
                {
                    "request_id": f"r{n}",
                    "account_id": 1 + n % ACCOUNTS,
                    "key_id": n % KEYS,
                    "key_prefix": f"k{(n // ACCOUNTS) % KEYS:07d}",
                    "model": f"model-{n % MODELS}",
                    "input_tokens": 100,
                    "cached_tokens": 0,
                    "output_tokens": 20,
                    "reasoning_tokens": 0,
                    "credits": 7,
                    "usd": 0.0000035,
                    "status": "ok",
                    "estimated": False,
                    "created_at": now - timedelta(seconds=(n * 30 * 86400) // rows),
                }
            )
            if len(batch) == 20_000:
                await conn.execute(insert(usage_records), batch)
                batch = []
        if batch:
            await conn.execute(insert(usage_records), batch)


async def timed(store: SqlAccountStore, account_id: int | None) -> float:
    until = utcnow()
    since = until - timedelta(days=31)
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        await store.usage_daily(account_id, since, until, 100, 0)
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--url")
    args = parser.parse_args()
    url = args.url or f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp()) / 'usage.db'}"
    engine = create_engine(url)
    await migrate(engine)
    started = time.perf_counter()
    await fill(engine, args.rows)
    print(f"filled {args.rows:,} rows in {time.perf_counter() - started:.1f} s ({engine.dialect.name})")
    day = "substr(created_at, 1, 10)" if engine.dialect.name == "sqlite" else "to_char(created_at, 'YYYY-MM-DD')"
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO usage_days (account_id, day, model, key_prefix, requests, input_tokens, "
                f"output_tokens, credits) SELECT account_id, {day}, model, key_prefix, count(*), sum(input_tokens), "
                f"sum(output_tokens), sum(credits) FROM usage_records GROUP BY account_id, {day}, model, key_prefix"
            )
        )
        days = (await conn.execute(text("SELECT count(*) FROM usage_days"))).scalar_one()
    print(f"{days:,} day rows")
    store = SqlAccountStore(engine)
    print(f"one account (1/{ACCOUNTS} of the rows), 31 days: {await timed(store, 1) * 1000:.0f} ms")
    print(f"all accounts (operator), 31 days:            {await timed(store, None) * 1000:.0f} ms")
    await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
