"""A task result and its charge become durable together (issue 16): a process killed at the exact
instant between them, then a restart on the same store, either keeps the result at what was
charged or runs it again and bills that run once; a task never ends charged but failed.

The kill is a fault point, not timing luck: the first "process" (its own ledger writer and task
store on a SQLite file) writes nothing more from the chosen instant on, as a SIGKILLed one would;
a second one opens the same store the way a restart does (it releases the dead process's holds,
then claims its unfinished tasks). Before the fix the first case ended ``error`` with the charge
kept: the result was lost with the process, and its free reruns failed on a down upstream.
"""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gatewright.api.tasks.codec import TaskApiCodec, spec_of
from gatewright.backends.registry import REQUIRED_FIELDS, BackendEnv, build_backends
from gatewright.core.catalog import parse_catalog
from gatewright.core.errors import UpstreamUnavailable
from gatewright.core.jobs import Jobs, TaskRecord, request_id
from gatewright.core.ledger import LedgerWriter
from gatewright.core.ledger_rules import LeaseCharge, Operation, Settlement
from gatewright.core.metrics import REGISTRY
from gatewright.core.pipeline import Call, Gateway
from gatewright.core.platform import Principal
from gatewright.core.routing import Router
from gatewright.settings import Settings
from gatewright.store.tables import holds, ledger, usage_records
from gatewright.store.tasks import SqlTaskStore
from gatewright.wiring import PlatformServices, bootstrap, open_platform
from tests.support.app import FAKE_CATALOG
from tests.tasks.conftest import text_task


class Killed(Exception):
    """What a write of a process that is already dead meets: it never reaches the store."""


class Process:
    """One gateway process's money and task state: a ledger writer and a task store on the file.

    ``kill_when`` is the fault point: from the first write it matches on, every later write of this
    process (ledger and task rows) fails, as after a SIGKILL."""

    def __init__(self, bundle: PlatformServices, gateway: Gateway, name: str) -> None:
        self.bundle = bundle
        self.killed = False
        self.died = asyncio.Event()
        self.kill_when: Callable[[str, Any], bool] = lambda kind, what: False
        writer = bundle.platform.ledger
        assert isinstance(writer, LedgerWriter)
        apply = writer.store.apply

        async def ledger_apply(batch: Sequence[Operation], retry: bool) -> list[Any]:
            if self.killed:
                raise Killed("the process is dead")
            outcomes = await apply(batch, retry)
            self.kill_if(self.kill_when("ledger", batch))
            return outcomes

        writer.store.apply = ledger_apply  # type: ignore[method-assign]
        process = self

        class TaskStore(SqlTaskStore):
            async def save(self, record: TaskRecord) -> None:
                if process.killed:
                    raise Killed("the process is dead")
                await super().save(record)
                process.kill_if(process.kill_when("task", record))

        self.jobs = Jobs(gateway, TaskApiCodec(), name, store=TaskStore(bundle.store), single_node=True)

    def kill_if(self, now: bool) -> None:
        if now:
            self.killed = True
            self.died.set()


@pytest.fixture
async def data(tmp_path: Path) -> AsyncIterator[tuple[Settings, str]]:
    settings = Settings(data_dir=tmp_path, model_cache=tmp_path)
    first = await bootstrap(settings)
    assert first is not None
    yield settings, first.api_key.key


def _gateway(bundle: PlatformServices, cache: Path, down: bool = False) -> Gateway:
    catalog = parse_catalog(tomllib.loads(FAKE_CATALOG.read_text()), "test", REQUIRED_FIELDS)
    gateway = Gateway(catalog, Router(catalog, build_backends(catalog, BackendEnv(model_cache=cache))), bundle.platform)
    if down:

        async def refuse(*args: Any, **kwargs: Any) -> Call:
            raise UpstreamUnavailable("the upstream is down")

        gateway.start = refuse  # type: ignore[method-assign]
    return gateway


async def _process(stack: AsyncExitStack, settings: Settings, name: str, down: bool = False) -> Process:
    bundle = await stack.enter_async_context(open_platform(settings))
    return Process(bundle, _gateway(bundle, settings.model_cache, down), name)


async def _finished(store: SqlTaskStore, key: str) -> TaskRecord:
    async with asyncio.timeout(60):
        while True:
            record = await store.load(key)
            assert record is not None
            if record.status != "processing":
                return record
            await asyncio.sleep(0.05)


async def _books(bundle: PlatformServices, key: str) -> dict[str, Any]:
    like = f"task_{key}_%"
    async with bundle.store.connect() as conn:
        charges = [-r.credits for r in await conn.execute(select(ledger).where(ledger.c.request_id.like(like)))]
        usage = [
            (r.request_id, r.credits, r.status)
            for r in await conn.execute(select(usage_records).where(usage_records.c.request_id.like(like)))
        ]
        held = {r.request_id: r.status for r in await conn.execute(select(holds).where(holds.c.request_id.like(like)))}
    return {"charges": charges, "usage": usage, "holds": held}


async def _run_until_killed(process: Process, principal_key: str, task: dict[str, Any]) -> str:
    """Submit ``task`` on ``process`` and wait until its fault point has fired."""
    principal = await process.bundle.platform.authenticator.authenticate(principal_key)
    spec = spec_of(task)
    await process.jobs.submit(spec, principal)
    await asyncio.wait_for(process.died.wait(), 30)
    return spec.key


async def test_killed_after_the_charge_commits_the_result_stands_at_what_was_charged(
    data: tuple[Settings, str],
) -> None:
    settings, key = data
    task = text_task(deliveryMethod="async", includeCost=True, messages=[{"role": "user", "content": "one two three"}])
    async with AsyncExitStack() as stack:
        first = await _process(stack, settings, "first")
        run = request_id(task["taskUUID"].lower(), 0, 1)
        # The instant the run's charge has committed, before anything else is written.
        first.kill_when = lambda kind, what: (
            kind == "ledger"
            and any(
                isinstance(op, Settlement | LeaseCharge) and op.hold.request_id == run and op.status == "ok"
                for op in what
            )
        )
        task_key = await _run_until_killed(first, key, task)
        before = await _books(first.bundle, task_key)
        assert before["charges"] and before["usage"] == [(run, before["charges"][0], "ok")]

        # The restart, with the upstream down: a result that needs running again cannot succeed.
        second = await _process(stack, settings, "second", down=True)
        await second.jobs.start()
        assert second.jobs.store is not None
        record = await _finished(second.jobs.store, task_key)
        await second.bundle.platform.ledger.flush()  # its charges committed
        after = await _books(second.bundle, task_key)
        await second.jobs.close()
        await first.jobs.close()
    outcome = record.outcomes[0]
    assert outcome is not None
    assert outcome.error is None, f"the task ended failed with its charge kept: {outcome.error!r}, {after}"
    assert record.status == "success" and outcome.choice is not None and outcome.choice.text == "one two three"
    assert outcome.cost is not None and outcome.cost.credits == before["charges"][0]
    assert after == before, "nothing more was run or billed"
    assert record.attempt == 1


async def test_killed_after_the_result_is_written_before_its_charge_the_result_runs_again(
    data: tuple[Settings, str],
) -> None:
    settings, key = data
    task = text_task(deliveryMethod="async", includeCost=True, messages=[{"role": "user", "content": "one two three"}])
    async with AsyncExitStack() as stack:
        first = await _process(stack, settings, "first")
        # The instant the result is stored as awaiting its charge, before the charge commits.
        first.kill_when = lambda kind, what: kind == "task" and bool(what.charging)
        task_key = await _run_until_killed(first, key, task)
        before = await _books(first.bundle, task_key)
        assert before["charges"] == [] and before["usage"] == []

        second = await _process(stack, settings, "second")  # releases the dead process's hold
        await second.jobs.start()
        assert second.jobs.store is not None
        record = await _finished(second.jobs.store, task_key)
        await second.bundle.platform.ledger.flush()  # its charges committed
        after = await _books(second.bundle, task_key)
        await second.jobs.close()
        await first.jobs.close()
    outcome = record.outcomes[0]
    assert record.status == "success" and outcome is not None and outcome.cost is not None
    run1, run2 = (request_id(task_key, 0, n) for n in (1, 2))
    if after["holds"]:  # committed holds (credit leases off); with leases run 1 died in its lease
        assert after["holds"] == {run1: "released", run2: "settled"}
    assert after["usage"] == [(run2, outcome.cost.credits, "ok")] and after["charges"] == [outcome.cost.credits]


async def test_a_streamed_result_whose_client_leaves_during_its_write_ahead_is_billed_once_and_kept(
    data: tuple[Settings, str],
) -> None:
    """The client of a streamed task leaves while its result is being written ahead of the charge:
    the answer was made, so it is billed as any stream a client leaves (``aborted``, its usage),
    once, and the result it paid for is kept at that charge. Before the fix the hold closed
    unbilled (``error``, 0 credits) and the result was dropped."""
    settings, key = data
    task = text_task(deliveryMethod="stream", messages=[{"role": "user", "content": "one two three"}])
    writing = asyncio.Event()

    class SlowStore(SqlTaskStore):
        async def save(self, record: TaskRecord) -> None:
            if record.charging and not writing.is_set():
                writing.set()
                await asyncio.Event().wait()  # the write-ahead is still on its way when the client goes
            await super().save(record)

    async with AsyncExitStack() as stack:
        bundle = await stack.enter_async_context(open_platform(settings))
        jobs = Jobs(_gateway(bundle, settings.model_cache), TaskApiCodec(), "only", store=SlowStore(bundle.store))
        principal = await bundle.platform.authenticator.authenticate(key)
        limiter = bundle.platform.limiter
        recorded: list[tuple[int, int]] = []  # (key id, tokens) counted against the key's token limit
        record_tokens = limiter.record_tokens

        async def counting(who: Principal, tokens: int) -> None:
            recorded.append((who.key_id, tokens))
            await record_tokens(who, tokens)

        limiter.record_tokens = counting  # type: ignore[method-assign]
        spec = spec_of(task)
        run = await jobs.stream(spec, principal, UpstreamUnavailable("the client left", code="streamAborted"))
        assert run.started

        async def client() -> None:
            async for _ in run.items:
                pass

        counted = _credits_counted()
        reading = asyncio.ensure_future(client())
        await asyncio.wait_for(writing.wait(), 30)
        reading.cancel()  # the client leaves
        with pytest.raises(asyncio.CancelledError):
            await reading
        assert jobs.store is not None
        record = await _finished(jobs.store, spec.key)
        await bundle.platform.ledger.flush()  # the settlement of an abandoned run nobody waits for
        books = await _books(bundle, spec.key)
        await jobs.close()
    run_id = request_id(spec.key, 0, 1)
    (charged,) = books["charges"]
    assert charged > 0
    assert books["usage"] == [(run_id, charged, "aborted")]
    outcome = record.outcomes[0]
    assert outcome is not None and outcome.error is None, outcome
    assert record.status == "success" and outcome.choice is not None and outcome.choice.text == "one two three"
    assert outcome.cost is not None and outcome.cost.credits == charged
    # What it is billed shows in /metrics too, and its tokens count in the key's token limit, as
    # for any stream a client leaves.
    assert _credits_counted() - counted == charged
    assert recorded == [(principal.key_id, outcome.usage.output_tokens)] and outcome.usage.output_tokens > 0


def _credits_counted() -> float:
    """``gatewright_credits_total`` over every model, as /metrics reports it."""
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        for sample in metric.samples
        if sample.name == "gatewright_credits_total"
    )
