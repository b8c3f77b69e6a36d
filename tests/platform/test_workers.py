"""`gatewright serve --workers 2`: two processes on one port share one SQLite store, the money
stays exact across them, and /metrics reports both workers' traffic whichever one is scraped, also
after a worker was killed and replaced."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncEngine

from gatewright.core.keys import key_prefix
from gatewright.store.db import create_engine
from tests.platform.audit import assert_consistent, wait_settled
from tests.platform.conftest import UNLIMITED, sqlite_url
from tests.support.procs import Gateway, running_gateway, wait_log

START = 2_000_000
STARTED = "Application startup complete."  # logged by each worker


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory, fake_catalog: Path) -> Iterator[Gateway]:
    metrics_dir = tmp_path_factory.mktemp("prometheus")
    (metrics_dir / "counter_999999.db").write_bytes(b"left by an earlier run")  # must be cleaned away
    env = {**UNLIMITED, "GATEWRIGHT_STARTING_CREDITS": str(START), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    with running_gateway(
        tmp_path_factory.mktemp("workers"), catalog=fake_catalog, env=env, args=["--workers", "2"]
    ) as gw:
        assert gw.api_key, gw.log()
        wait_log(gw, STARTED, 2)  # the gateway answers once one worker has started; the other may lag far behind
        yield gw


async def test_two_workers_bill_exactly_once(two_workers: Gateway) -> None:
    headers = {"authorization": f"Bearer {two_workers.api_key}"}
    body = {"model": "fake", "messages": [{"role": "user", "content": "one two three four"}], "max_tokens": 8}
    limits = httpx.Limits(max_connections=32)  # many connections, so both processes serve some
    async with httpx.AsyncClient(base_url=two_workers.url, headers=headers, timeout=60, limits=limits) as client:
        answers = await asyncio.gather(*(client.post("/v1/chat/completions", json=body) for _ in range(120)))
        assert [a.status_code for a in answers] == [200] * 120
        told = sum(a.json()["meta"]["usage"]["credits_used"] for a in answers)
        first = (await client.get("/v1/key")).json()["data"]  # the key works wherever it lands
    engine: AsyncEngine = create_engine(sqlite_url(two_workers))
    try:
        result = await wait_settled(engine, account_id=1, requests=[a.headers["x-request-id"] for a in answers])
    finally:
        await engine.dispose()
    assert_consistent(result, START)
    assert START - result.balance == told
    assert two_workers.api_key is not None
    assert len(result.usage) == 120 and first["prefix"] == key_prefix(two_workers.api_key)
    assert len(_worker_pids(two_workers)) == 2, "two worker processes served the port"


def _worker_pids(gateway: Gateway) -> list[int]:
    return [int(pid) for pid in re.findall(r"Started server process \[(\d+)\]", gateway.log())]


Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _series(families: object) -> Series:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in families  # type: ignore[attr-defined]
        for sample in family.samples
    }


def _scrape(gateway: Gateway) -> Series:
    # A new connection per scrape, so the scrapes land on either worker.
    answer = httpx.get(f"{gateway.url}/metrics", headers={"connection": "close"}, timeout=30)
    assert answer.status_code == 200
    return _series(text_string_to_metric_families(answer.text))


CHAT = ("gatewright_requests_total", (("route", "/v1/chat/completions"), ("status", "200")))
FAILED = ("gatewright_requests_total", (("route", "/v1/chat/completions"), ("status", "500")))
OUTPUT = ("gatewright_tokens_total", (("kind", "output"), ("model", "fake")))
INPUT = ("gatewright_tokens_total", (("kind", "input"), ("model", "fake")))
CREDITS = ("gatewright_credits_total", (("model", "fake"),))
TTFT = ("gen_ai_server_time_to_first_token_seconds_count", (("gen_ai_request_model", "fake"),))
UPSTREAM_OK = ("gatewright_upstream_first_event_seconds_count", (("deployment", "fake"), ("outcome", "ok")))
UPSTREAM_ERRORS = ("gatewright_upstream_errors_total", (("deployment", "fake-500"), ("status", "500")))
COUNTED = (CHAT, FAILED, OUTPUT, INPUT, CREDITS, TTFT, UPSTREAM_OK, UPSTREAM_ERRORS)


async def _traffic(gateway: Gateway, ok: int, failing: int) -> None:
    headers = {"authorization": f"Bearer {gateway.api_key}"}
    body = {"model": "fake", "messages": [{"role": "user", "content": "one two three four"}], "max_tokens": 8}
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(base_url=gateway.url, headers=headers, timeout=60, limits=limits) as client:
        calls = [client.post("/v1/chat/completions", json=body) for _ in range(ok)]
        calls += [client.post("/v1/chat/completions", json={**body, "model": "fake-500"}) for _ in range(failing)]
        answers = await asyncio.gather(*calls)
    assert sorted(a.status_code for a in answers) == [200] * ok + [500] * failing


def _delta(after: Series, before: Series, key: tuple[str, tuple[tuple[str, str], ...]]) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


async def _counted(gateway: Gateway, before: Series, expected: dict[Any, float], within: float = 30.0) -> None:
    """Wait until a scrape shows ``expected``: a worker counts a request after its answer was sent
    (the client may scrape the other worker before that worker has run again on a loaded machine)."""
    deadline = time.monotonic() + within
    while True:
        after = _scrape(gateway)
        seen = {key: _delta(after, before, key) for key in expected}
        if seen == expected or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.1)


async def test_metrics_add_up_every_worker(two_workers: Gateway) -> None:
    metrics_dir = Path(two_workers.env["PROMETHEUS_MULTIPROC_DIR"])
    assert not (metrics_dir / "counter_999999.db").exists(), "files of an earlier run are removed at start"
    before = _scrape(two_workers)
    await _traffic(two_workers, ok=40, failing=3)
    ok = 40

    def served_by_each() -> dict[int, float]:
        per_worker = {}
        for pid in _worker_pids(two_workers):
            file = metrics_dir / f"counter_{pid}.db"  # made at a worker's first count
            merged = MultiProcessCollector.merge([str(file)], accumulate=True) if file.exists() else []
            per_worker[pid] = _series(merged).get(CHAT, 0.0)
        return per_worker

    # The kernel hands connections to whichever worker accepts first: on a loaded machine one may
    # take them all. Send more (a bounded number) until both have served part, so the sum means something.
    for _ in range(20):
        if all(count > 0 for count in served_by_each().values()):
            break
        await _traffic(two_workers, ok=10, failing=0)
        ok += 10
    # Each known quantity, whichever worker answers the scrape: `ok` answers of 4 output tokens and
    # 7 prompt tokens (4 words + 3), 2 credits per prompt and 4 per output token; 3 failures.
    expected = {CHAT: ok, FAILED: 3, OUTPUT: 4 * ok, INPUT: 7 * ok, CREDITS: ok * (7 * 2 + 4 * 4)}
    expected |= {TTFT: ok, UPSTREAM_OK: ok, UPSTREAM_ERRORS: 3}
    await _counted(two_workers, before, expected)
    scrapes = [_scrape(two_workers) for _ in range(6)]
    for after in scrapes:
        assert {key: _delta(after, before, key) for key in COUNTED} == expected
        assert after[("gatewright_ledger_commit_seconds_count", ())] > 0

    # Both workers served part of it, and a scrape reports their sum.
    per_worker = served_by_each()
    assert all(count > 0 for count in per_worker.values()), per_worker
    assert sum(per_worker.values()) == scrapes[-1][CHAT]

    # A worker killed outright is replaced; what it counted stays in the totals.
    killed = _worker_pids(two_workers)[0]
    os.kill(killed, signal.SIGKILL)
    await asyncio.to_thread(wait_log, two_workers, STARTED, 3)  # the replacement has started
    await _traffic(two_workers, ok=10, failing=0)
    await _counted(two_workers, before, {CHAT: ok + 10, OUTPUT: 4 * (ok + 10)})
    for after in (_scrape(two_workers) for _ in range(4)):
        assert _delta(after, before, CHAT) == ok + 10
        assert _delta(after, before, OUTPUT) == 4 * (ok + 10)
