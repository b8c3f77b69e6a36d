"""Console sessions across worker processes: ``gatewright serve --workers 2`` (a real process, two
workers on one port, one SQLite store). Signed in once, every request is authenticated whichever
worker takes it, a state-changing call with the session's CSRF token too; signing out ends the
session on both. The kernel hands each new connection to either worker; each worker's request
counter (its Prometheus multiprocess file) shows both served console requests."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
from prometheus_client.multiprocess import MultiProcessCollector

from tests.support.app import FAKE_CATALOG
from tests.support.procs import Gateway, running_gateway, wait_log

PROXY_OK = ("gatewright_requests_total", "/ui/api/{path:path}", "200")
ROUNDS = 20  # at most this many rounds of BATCH requests until both workers have served some
BATCH = 12


def _served_by_each(gateway: Gateway, metrics_dir: Path) -> dict[int, float]:
    """Console requests answered 200 by each worker, from its own counter file."""
    counts: dict[int, float] = {}
    for pid in (int(p) for p in re.findall(r"Started server process \[(\d+)\]", gateway.log())):
        file = metrics_dir / f"counter_{pid}.db"
        families = MultiProcessCollector.merge([str(file)], accumulate=True) if file.exists() else []
        counts[pid] = sum(
            sample.value
            for family in families
            for sample in family.samples
            if (sample.name, sample.labels.get("route"), sample.labels.get("status")) == PROXY_OK
        )
    return counts


async def _each_on_a_new_connection(url: str, cookie: str, count: int) -> list[int]:
    async def one() -> int:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:  # a new connection each time
            answer = await client.get("/ui/api/v1/keys", headers={"cookie": f"gw_console={cookie}"})
            return answer.status_code

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def test_a_session_works_on_every_worker_until_signed_out(tmp_path: Path) -> None:
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    with running_gateway(tmp_path / "gw", catalog=FAKE_CATALOG, env=env, args=["--workers", "2"]) as gw:
        wait_log(gw, "Application startup complete.", 2)  # both workers, not only the one that answered first
        async with httpx.AsyncClient(base_url=gw.url, timeout=60) as client:
            signed = await client.post("/ui/session", json={"key": gw.management_key})
            assert signed.status_code == 200, signed.text
        cookie = signed.cookies["gw_console"]

        statuses: list[int] = []
        for _ in range(ROUNDS):
            statuses += await _each_on_a_new_connection(gw.url, cookie, BATCH)
            served = _served_by_each(gw, metrics_dir)
            if len(served) == 2 and all(served.values()):
                break
        assert statuses == [200] * len(statuses)  # authenticated on whichever worker took it
        assert len(served) == 2 and all(served.values()), f"both workers served console requests: {served}"

        # A state-changing call with the session's CSRF token, on fresh connections (either worker).
        for i in range(4):
            async with httpx.AsyncClient(base_url=gw.url, timeout=60, cookies={"gw_console": cookie}) as client:
                csrf = (await client.get("/ui/session")).json()["csrf"]
                made = await client.post("/ui/api/v1/keys", json={"name": f"made-{i}"}, headers={"x-csrf-token": csrf})
                assert made.status_code == 200, made.text

        async with httpx.AsyncClient(base_url=gw.url, timeout=60, cookies={"gw_console": cookie}) as client:
            csrf = (await client.get("/ui/session")).json()["csrf"]
            assert (await client.delete("/ui/session", headers={"x-csrf-token": csrf})).status_code == 200
        after = await _each_on_a_new_connection(gw.url, cookie, 2 * BATCH)
        assert after == [401] * len(after)  # signed out on both workers at once
