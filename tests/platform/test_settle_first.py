"""A finished request's charge is durable before its answer ends, and a task's result is stored
only after its charge: with the real ledger on SQLite whose commits of settlements are held at a
gate, the usage event (and so ``[DONE]`` or the JSON body) and the stored task result wait for
the commit, or, with the settlement journal (the default), for the charge's line in the journal,
which the next start applies (test_journal.py kills a gateway to show it). A crash at any instant
therefore never leaves an answer a client received, or a result stored as done, without its
charge (the chaos test, test_chaos.py, kills processes to show the sums)."""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gatewright.api.tasks.codec import TaskApiCodec, spec_of
from gatewright.backends.registry import REQUIRED_FIELDS, BackendEnv, build_backends
from gatewright.core.catalog import parse_catalog
from gatewright.core.events import UsageReport
from gatewright.core.jobs import Jobs
from gatewright.core.ledger import LedgerWriter
from gatewright.core.ledger_rules import LeaseCharge, Operation, Settlement
from gatewright.core.pipeline import Gateway
from gatewright.core.platform import Principal
from gatewright.core.routing import Router
from gatewright.core.types import CoreRequest, Message, TextPart
from gatewright.settings import Settings
from gatewright.store.tables import usage_records
from gatewright.wiring import PlatformServices, bootstrap, open_platform
from tests.support.app import FAKE_CATALOG
from tests.support.procs import journal_request_ids
from tests.tasks.conftest import text_task


class Gate:
    """Holds every transaction that carries a settlement (against a hold or a credit lease) until opened."""

    def __init__(self, writer: LedgerWriter) -> None:
        self.arrived = asyncio.Event()
        self.open = asyncio.Event()
        store = writer.store
        apply = store.apply

        async def gated(batch: Sequence[Operation], retry: bool) -> list[Any]:
            if any(isinstance(op, Settlement | LeaseCharge) for op in batch):
                self.arrived.set()
                await self.open.wait()
            return await apply(batch, retry)

        store.apply = gated  # type: ignore[method-assign]


@pytest.fixture(params=[False, True], ids=["commit", "journal"])
def journal(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
async def platform(tmp_path: Path, journal: bool) -> AsyncIterator[tuple[PlatformServices, Gateway, Principal, Gate]]:
    settings = Settings(data_dir=tmp_path, model_cache=tmp_path, settlement_journal=journal)
    first = await bootstrap(settings)
    assert first is not None
    catalog = parse_catalog(tomllib.loads(FAKE_CATALOG.read_text()), "test", REQUIRED_FIELDS)
    async with open_platform(settings) as bundle:
        principal = await bundle.platform.authenticator.authenticate(first.api_key.key)
        backends = build_backends(catalog, BackendEnv(model_cache=settings.model_cache))
        gateway = Gateway(catalog, Router(catalog, backends), bundle.platform)
        assert isinstance(bundle.platform.ledger, LedgerWriter)
        gate = Gate(bundle.platform.ledger)
        try:
            yield bundle, gateway, principal, gate
        finally:
            gate.open.set()


async def _usage_rows(bundle: PlatformServices) -> int:
    async with bundle.store.connect() as conn:
        return len(list(await conn.execute(select(usage_records))))


async def test_the_usage_event_waits_for_the_charge_to_commit(
    platform: tuple[PlatformServices, Gateway, Principal, Gate], journal: bool, tmp_path: Path
) -> None:
    bundle, gateway, principal, gate = platform
    request = CoreRequest("echo", (Message("user", (TextPart("one two three"),)),), stream=True)
    call = await gateway.start(request, principal, "req-settle-first")
    before: list[Any] = []
    async for event in call.events:
        before.append(event)
        if len(before) == 4:  # the three words: only the choice's end and the usage remain
            break
    assert journal_request_ids(tmp_path) == []
    if journal:
        # The answer ends without the commit, its charge in the journal before its last event.
        usage_seen: list[list[str]] = []

        async def watch() -> list[Any]:
            events = []
            async for event in call.events:
                if isinstance(event, UsageReport):
                    usage_seen.append(journal_request_ids(tmp_path))
                events.append(event)
            return events

        events = await asyncio.wait_for(watch(), 30)
        assert usage_seen == [["req-settle-first"]], "the usage event went out before the journal held its charge"
        await gate.arrived.wait()  # the commit is under way, held at the gate
        assert await _usage_rows(bundle) == 0
    else:
        rest = asyncio.ensure_future(_drain(call.events))
        await gate.arrived.wait()  # the settlement is being committed, and held there
        for _ in range(20):
            await asyncio.sleep(0)
        assert not rest.done(), "the answer ended before its charge was durable"
        assert await _usage_rows(bundle) == 0
    gate.open.set()
    if not journal:
        events = await rest
    usage = [e for e in events if isinstance(e, UsageReport)]
    assert len(usage) == 1 and usage[0].cost is not None and usage[0].cost.credits > 0
    await bundle.platform.ledger.flush()
    assert await _usage_rows(bundle) == 1
    assert journal_request_ids(tmp_path) == []  # committed: its line is gone


async def _drain(events: AsyncIterator[Any]) -> list[Any]:
    return [event async for event in events]


async def test_a_task_result_is_stored_only_after_its_charge(
    platform: tuple[PlatformServices, Gateway, Principal, Gate], journal: bool, tmp_path: Path
) -> None:
    bundle, gateway, principal, gate = platform
    jobs = Jobs(gateway, TaskApiCodec(), "node")
    spec = spec_of(text_task(model="echo", deliveryMethod="async"))
    job, started = await jobs.submit(spec, principal)
    assert started
    await gate.arrived.wait()
    if journal:
        await asyncio.wait_for(job.done.wait(), 30)  # the commit is still held at the gate
        assert job.outcomes[0] is not None and len(journal_request_ids(tmp_path)) == 1
    else:
        for _ in range(20):
            await asyncio.sleep(0)
        assert job.outcomes == [None], "the result was stored before its charge was durable"
    gate.open.set()
    await asyncio.wait_for(job.done.wait(), 30)
    outcome = job.outcomes[0]
    assert outcome is not None and outcome.cost is not None and outcome.cost.credits > 0
    await bundle.platform.ledger.flush()
    assert await _usage_rows(bundle) == 1
    await jobs.close()
