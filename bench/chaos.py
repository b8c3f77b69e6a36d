"""The money chaos run, longer than the suite's (tests/platform/test_chaos.py): real gateway
processes in front of the fault-injecting upstream, thousands of requests in three dialects,
clients leaving mid-stream, spend-limited keys, prompts far above a characters-based token
estimate, SIGKILLs at seeded moments with restarts; then the books are checked against what every
client was told, and the figures printed.

python -m bench.chaos [--requests 2000] [--kills 8] [--concurrency 16] [--seed 16] [--postgres | --workers 2]

``--postgres`` runs two replicas on a PostgreSQL started for the run (tests/support/services.py).
``--workers N`` runs one gateway of N worker processes on SQLite; every other kill takes a single
worker (its supervisor replaces it), the others the whole gateway. Exits 1 when an invariant is broken.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import tempfile
from pathlib import Path

import httpx

from gatewright.store.db import create_engine
from tests.support.chaos import (
    ROUTE,
    Plan,
    attribute_unknown,
    check,
    kill_summary,
    make_keys,
    read_books,
    release_stale,
    report,
    run_traffic,
    script,
    start_cluster,
)
from tests.support.faulty_upstream import Answer, running_faulty_upstream
from tests.support.services import running_postgres

KEY_LIMITS_USD = [None, None, 0.002, 0.01, 0.05]


async def run(plan: Plan, postgres: bool, credits: int, workers: int = 1) -> bool:
    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gatewright-chaos-")))
        upstream = stack.enter_context(running_faulty_upstream())
        upstream.script(ROUTE, *script(random.Random(plan.seed), plan.requests * 2), default=Answer())
        if postgres:
            url = stack.enter_context(running_postgres()).create_database()
            env, replicas = {"GATEWRIGHT_DATABASE_URL": url}, 2
        else:
            url, env, replicas = f"sqlite+aiosqlite:///{root / 'gw0' / 'gatewright.db'}", {}, 1
        cluster = await asyncio.to_thread(start_cluster, root, upstream, replicas, env, credits, workers)
        try:
            management = cluster.gateways[0].management_key
            assert management is not None
            async with httpx.AsyncClient(base_url=cluster.url(0), timeout=30) as http:
                keys = await make_keys(http, management, KEY_LIMITS_USD)
            told = await run_traffic(cluster, keys, plan)
        finally:
            for gateway in cluster.gateways:
                gateway.stop()
        engine = create_engine(url)
        try:
            await release_stale(engine)
            books = await read_books(engine, 1)
        finally:
            await engine.dispose()
        told = attribute_unknown(books, told)
        violations = check(books, told)
        where = "PostgreSQL, two replicas" if postgres else f"SQLite, --workers {workers}" if workers > 1 else "SQLite"
        title = f"{where}: {kill_summary(cluster)}"
        print(report(books, told, violations, title))
        return not violations


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--credits", type=int, default=400_000)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--workers", type=int, default=1, help="worker processes of the SQLite gateway")
    args = parser.parse_args(argv)
    if args.postgres and args.workers > 1:
        parser.error("--workers runs on SQLite; --postgres runs two single-process replicas")
    plan = Plan(seed=args.seed, requests=args.requests, concurrency=args.concurrency, kills=args.kills)
    ok = asyncio.run(run(plan, args.postgres, args.credits, args.workers))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
