"""Two gateway nodes sharing one PostgreSQL store, in process (each with its own ledger writer and
job runner, the fake backend generating): a live node's heartbeat keeps its tasks its own; the tasks
of a node that died are taken over once its heartbeat is older than the lease, and each result is
billed once: the run the dead node was generating closes unbilled, the rerun is billed."""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from gatewright.api.tasks.codec import TaskApiCodec, spec_of
from gatewright.backends.registry import REQUIRED_FIELDS, BackendEnv, build_backends
from gatewright.core.catalog import parse_catalog
from gatewright.core.jobs import Jobs
from gatewright.core.pipeline import Gateway
from gatewright.core.platform import Principal
from gatewright.core.routing import Router
from gatewright.settings import Settings
from gatewright.store.tables import ledger, tasks, usage_records
from gatewright.store.tasks import SqlTaskStore
from gatewright.wiring import PlatformServices, bootstrap, open_platform
from tests.support.app import FAKE_CATALOG
from tests.support.services import Postgres, ServiceUnavailable, in_ci, running_postgres
from tests.tasks.conftest import text_task

pytestmark = pytest.mark.postgres

# Long enough that a loaded 2-core machine cannot starve a live heartbeat (every lease/4) past it.
LEASE = timedelta(seconds=2)


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with ExitStack() as stack:
        try:
            server = stack.enter_context(running_postgres())
        except ServiceUnavailable as error:
            message = f"PostgreSQL is not available here: {error}"
            if in_ci():
                pytest.fail(message)
            pytest.skip(message)
        yield server


@dataclass
class Node:
    """One gateway process: its own platform (ledger writer) and job runner on the shared store."""

    jobs: Jobs
    bundle: PlatformServices
    stack: AsyncExitStack

    async def stop(self) -> None:
        await self.jobs.close()
        await self.stack.aclose()


async def start_node(settings: Settings, owner: str) -> Node:
    catalog = parse_catalog(tomllib.loads(FAKE_CATALOG.read_text()), "test", REQUIRED_FIELDS)
    stack = AsyncExitStack()
    bundle = await stack.enter_async_context(open_platform(settings))
    backends = build_backends(catalog, BackendEnv(model_cache=settings.model_cache))
    gateway = Gateway(catalog, Router(catalog, backends), bundle.platform)
    jobs = Jobs(gateway, TaskApiCodec(), owner, store=SqlTaskStore(bundle.store), lease=LEASE)
    await jobs.start()
    return Node(jobs, bundle, stack)


@pytest.fixture
async def cluster(postgres: Postgres, tmp_path: Path) -> AsyncIterator[tuple[Settings, Principal]]:
    settings = Settings(database_url=postgres.create_database(), data_dir=tmp_path, model_cache=tmp_path)
    first = await bootstrap(settings)
    assert first is not None
    async with open_platform(settings) as probe:
        principal = await probe.platform.authenticator.authenticate(first.api_key.key)
    yield settings, principal


async def test_a_dead_nodes_tasks_are_taken_over_after_the_lease(cluster: tuple[Settings, Principal]) -> None:
    settings, principal = cluster
    a, b = await start_node(settings, "node-a"), await start_node(settings, "node-b")
    try:
        words = " ".join(f"w{i}" for i in range(24))  # 24 tokens at 0.2 s each
        spec = spec_of(text_task(model="slow", messages=[{"role": "user", "content": words}], deliveryMethod="async"))
        _, started = await a.jobs.submit(spec, principal)
        assert started
        await asyncio.sleep(2.5)  # longer than the lease: only a's heartbeat keeps the row fresh
        assert await b.jobs.claim_orphans() == 0
        joined, started = await b.jobs.submit(spec, principal)  # a retry reaching the other node
        assert not started and joined.status == "processing"

        await a.jobs.close()  # a dies mid-generation; its row stays processing, owned by a
        await a.stack.aclose()
        assert await b.jobs.claim_orphans() == 0  # its heartbeat is still fresh
        # b's own heartbeat loop (every lease/4) takes the row over once a's heartbeat is stale.
        deadline = asyncio.get_running_loop().time() + 90  # a bound for a loaded machine, not a speed check
        while True:
            job = await b.jobs.find(spec.key, principal)
            if (job is not None and job.finished) or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.1)
        assert job is not None and job.status == "success" and job.outcomes[0] is not None
        assert job.outcomes[0].choice is not None and job.outcomes[0].choice.text == words
        while True:  # the node reports the result before its row's final write lands: wait for that write
            async with b.bundle.store.connect() as conn:
                row = (await conn.execute(select(tasks).where(tasks.c.task_uuid == spec.key))).one()
            if row.status != "processing" or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.1)
        await b.bundle.platform.ledger.flush()  # b's queued charges committed
        async with b.bundle.store.connect() as conn:
            charged = [r.request_id for r in await conn.execute(select(ledger).where(ledger.c.kind == "charge"))]
            usage = {r.request_id: r.status for r in await conn.execute(select(usage_records))}
        assert (row.owner, row.attempt, row.status) == ("node-b", 2, "success")
        # a's interrupted run closed unbilled (a stop is not the client leaving); b's rerun is billed once.
        assert charged == [f"task_{spec.key}_0_2"]
        assert usage == {f"task_{spec.key}_0_1": "aborted", f"task_{spec.key}_0_2": "ok"}
    finally:
        await b.stop()
