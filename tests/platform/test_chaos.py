"""Chaos for money (issue 16): real gateway processes in front of the fault-injecting upstream
(5xx, 429, resets before headers and mid-stream, hangs, malformed JSON, streams without [DONE],
usage far above the hold), traffic in three dialects with clients leaving mid-stream, keys with
spend limits, CJK-and-code prompts whose real token count is their UTF-8 bytes, and SIGKILL of
gateway processes at seeded moments with restarts; on SQLite (one process, and ``--workers 2``
where single worker processes are killed too) and on PostgreSQL with two replicas.
Afterwards the books must balance to the credit against what every client was told (the figures
are printed); ``test_the_checker_catches_each_broken_invariant`` shows each check firing.

Bounded for the suite (a few hundred requests, two kills each); ``python -m bench.chaos`` runs
longer ones."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from gatewright.store.db import create_engine
from tests.support.chaos import (
    ROUTE,
    Books,
    Cluster,
    Plan,
    Told,
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
from tests.support.faulty_upstream import Answer, FaultyUpstream, running_faulty_upstream
from tests.support.services import Postgres

ACCOUNT = 1  # the first start's account: the management key makes the chaos keys in it
KEY_LIMITS_USD = [None, 0.001, 0.004]  # 2,000 and 8,000 credits: a few answers each


@pytest.fixture(scope="module")
def upstream() -> Iterator[FaultyUpstream]:
    with running_faulty_upstream() as server:
        yield server


async def _chaos(cluster: Cluster, upstream: FaultyUpstream, plan: Plan, url: str, title: str) -> None:
    upstream.script(ROUTE, *script(random.Random(plan.seed), plan.requests * 2), default=Answer(prompt_tokens=141))
    try:
        async with httpx.AsyncClient(base_url=cluster.url(0), timeout=30) as http:
            assert cluster.gateways[0].management_key
            keys = await make_keys(http, cluster.gateways[0].management_key, KEY_LIMITS_USD)
        told = await run_traffic(cluster, keys, plan)
    finally:
        for gateway in cluster.gateways:
            gateway.stop()  # gracefully: requests in flight settle before it exits
    engine = create_engine(url)
    try:
        await release_stale(engine)  # the killed processes' holds (a restart or the hour does this)
        books = await read_books(engine, ACCOUNT)
    finally:
        await engine.dispose()
    told = attribute_unknown(books, told)
    violations = check(books, told)
    print(report(books, told, violations, f"{title}: {kill_summary(cluster)}"))
    assert cluster.restarts == plan.kills
    assert sum(t.fate == "answered" for t in told) > plan.requests // 5, "the faults left too little traffic"
    assert not violations, violations


async def test_chaos_on_sqlite(tmp_path: Path, upstream: FaultyUpstream) -> None:
    plan = Plan(seed=1601, requests=160, concurrency=8, kills=2)
    cluster = await asyncio.to_thread(start_cluster, tmp_path, upstream, 1, {}, 25_000)
    url = f"sqlite+aiosqlite:///{tmp_path / 'gw0' / 'gatewright.db'}"
    await _chaos(cluster, upstream, plan, url, "SQLite, one process")


async def test_chaos_on_sqlite_with_two_workers(tmp_path: Path, upstream: FaultyUpstream) -> None:
    """``--workers 2`` on one SQLite file: a worker SIGKILLed (its supervisor replaces it while the
    other serves), then the whole gateway, then a worker again."""
    plan = Plan(seed=1603, requests=160, concurrency=8, kills=3)
    cluster = await asyncio.to_thread(start_cluster, tmp_path, upstream, 1, {}, 25_000, 2)
    url = f"sqlite+aiosqlite:///{tmp_path / 'gw0' / 'gatewright.db'}"
    await _chaos(cluster, upstream, plan, url, "SQLite, --workers 2")
    assert cluster.worker_kills == 2


@pytest.mark.postgres
async def test_chaos_on_postgres_with_two_replicas(
    tmp_path: Path, upstream: FaultyUpstream, postgres: Postgres
) -> None:
    url = postgres.create_database()
    plan = Plan(seed=1602, requests=160, concurrency=8, kills=2)
    env = {"GATEWRIGHT_DATABASE_URL": url}
    cluster = await asyncio.to_thread(start_cluster, tmp_path, upstream, 2, env, 25_000)
    await _chaos(cluster, upstream, plan, url, "PostgreSQL, two replicas")


# -- the checker, on books broken on purpose ---------------------------------------------------------


def _good() -> tuple[Books, list[Told]]:
    """Three requests: answered (300), failed (free), cut mid-stream (billed 40); a key limited to 1,000."""
    books = Books(
        start=10_000,
        balance=9_660,
        reserved=0,
        ledger_sum=9_660,
        min_balance_after=9_660,
        charges=[("a", 300), ("c", 40)],
        usage=[("a", 7, 300, "ok"), ("b", 7, 0, "error"), ("c", 7, 40, "aborted")],
        holds={"a": "settled", "b": "settled", "c": "settled", "d": "released"},
        keys={7: (1_000, 340, 0)},
    )
    told = [
        Told(("a",), "chat", "answered", 300),
        Told(("b",), "chat", "failed"),
        Told(("c",), "chat stream", "cut"),
        Told(("d",), "messages", "cut"),
    ]
    return books, told


def test_the_checker_catches_each_broken_invariant() -> None:
    books, told = _good()
    assert check(books, told) == {}
    broken: dict[str, tuple[Books, list[Told]]] = {
        # an extra usage record (a request billed twice)
        "billed once": (
            replace(
                books,
                usage=[*books.usage, ("a", 7, 300, "ok")],
                charges=[*books.charges, ("a", 300)],
                balance=9_360,
                ledger_sum=9_360,
                keys={7: (1_000, 640, 0)},
            ),
            told,
        ),
        # a charge missing from the ledger while the usage record says 300
        "books balance": (replace(books, charges=[("c", 40)]), told),
        # an answer the client received with no charge (the lost settlement of point 3)
        "every answer billed as told": (
            replace(
                books,
                usage=books.usage[1:],
                charges=[("c", 40)],
                balance=9_960,
                ledger_sum=9_960,
                keys={7: (1_000, 40, 0)},
            ),
            told,
        ),
        # a failed request billed
        "failures free": (
            replace(
                books,
                usage=[books.usage[0], ("b", 7, 5, "error"), books.usage[2]],
                charges=[*books.charges, ("b", 5)],
                balance=9_655,
                ledger_sum=9_655,
                keys={7: (1_000, 345, 0)},
            ),
            told,
        ),
        # a key past its limit
        "limits hold": (replace(books, keys={7: (300, 340, 0)}), told),
        # credits left reserved, a hold left open
        "nothing reserved": (replace(books, reserved=458, holds={**books.holds, "d": "held"}), told),
        # a charge no client request explains
        "every charge has a request": (
            replace(
                books,
                usage=[*books.usage, ("zz", 7, 10, "ok")],
                charges=[*books.charges, ("zz", 10)],
                balance=9_650,
                ledger_sum=9_650,
                keys={7: (1_000, 350, 0)},
            ),
            told,
        ),
    }
    for name, (bad_books, bad_told) in broken.items():
        fired = check(bad_books, bad_told)
        assert name in fired, f"{name} did not fire: {fired}"
    # a credit lease left open (what it holds is no request's)
    assert "nothing reserved" in check(replace(books, leases={"gw-7-1": "returned", "gw-7-2": "held"}), told)
