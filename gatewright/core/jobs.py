"""Durable tasks: one ``tasks`` row per taskUUID, each result stored the moment it is finished.

A task is a fixed list of generations (its results). ``Jobs`` runs them through the same
``Gateway.start`` as every dialect, keeps the row current, and hands finished results to the webhook
sender. Rows name their owner (the process running them) and carry its heartbeat (``updated_at``);
a process that starts claims the rows whose owner is gone and runs what they had not finished.

Billing stays exactly-once across restarts and retries. The n-th run of result i uses the request
id ``task_<uuid>_<i>_<n>`` (the ledger settles each request id at most once); before a rerun the
ledger's records of the earlier runs of that result are read, and a result that was already
charged is run again without billing.

The wire shape of tasks and results belongs to the dialect: it is given as a ``TaskCodec``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from gatewright.core.accumulate import collect
from gatewright.core.clock import aware, utcnow
from gatewright.core.errors import Conflict, GatewrightError, InternalError, Unauthorized
from gatewright.core.keys import principal_of
from gatewright.core.pipeline import Call, Gateway
from gatewright.core.platform import Principal
from gatewright.core.types import Choice, CoreRequest, Cost, Usage
from gatewright.core.webhooks import Attempt, WebhookDelivery
from gatewright.store.tables import api_keys, tasks, usage_records

log = logging.getLogger("gatewright.jobs")

Item = dict[str, Any]  # one result as the dialect renders it; stored as is
TaskStatus = Literal["processing", "success", "error"]
WebhookState = Literal["pending", "delivered", "failed"]

# A task interrupted this many times (restarts, crashes) fails instead of running again.
MAX_RUNS = 5


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one result ended: a choice with its usage and cost, or an error."""

    index: int
    seed: int | None
    choice: Choice | None = None
    usage: Usage = field(default_factory=Usage)
    cost: Cost | None = None
    error: GatewrightError | None = None


@dataclass(frozen=True, slots=True)
class TaskSpec:
    uuid: str  # as the client sent it; rows are keyed by its lower-case form
    task_type: str
    stored: dict[str, Any]  # what the row keeps; the codec rebuilds this same spec from it
    fingerprint: str  # an identical retry has the same one
    delivery: str
    requests: tuple[CoreRequest, ...]  # one per result
    seeds: tuple[int | None, ...]
    webhook_url: str | None = None
    wire: Any = None  # the dialect's parsed task, for its own rendering

    @property
    def key(self) -> str:
        return self.uuid.lower()


class TaskCodec(Protocol):
    """What ``Jobs`` needs from the dialect."""

    def rebuild(self, stored: dict[str, Any], fingerprint: str) -> TaskSpec: ...

    def render(self, spec: TaskSpec, outcome: Outcome) -> Item:
        """The stored form of a finished result (success or error)."""
        ...

    def webhook_body(self, spec: TaskSpec, item: Item) -> bytes: ...


def request_id(key: str, index: int, run: int) -> str:
    return f"task_{key}_{index}_{run}"


@dataclass(eq=False)
class Job:
    spec: TaskSpec
    account_id: int | None
    key_id: int | None
    principal: Principal | None
    attempt: int
    items: list[Item | None]
    webhooks: list[dict[str, Any] | None]  # per result: {"state", "attempts"}
    owner: str | None = None
    heartbeat: datetime | None = None
    # The core error of each failed result finished by this process (its status, retry-after).
    errors: dict[int, GatewrightError] = field(default_factory=dict)
    running: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def finished(self) -> bool:
        return all(item is not None for item in self.items)

    @property
    def status(self) -> TaskStatus:
        if not self.finished:
            return "processing"
        return "success" if all(item and item.get("status") == "success" for item in self.items) else "error"

    @property
    def webhook_pending(self) -> bool:
        return any(w is not None and w["state"] == "pending" for w in self.webhooks)

    def pending(self) -> list[int]:
        return [i for i, item in enumerate(self.items) if item is None]


def _owner_matches(owner: str | None) -> Any:
    return tasks.c.owner.is_(None) if owner is None else tasks.c.owner == owner


class Jobs:
    def __init__(
        self,
        gateway: Gateway,
        codec: TaskCodec,
        owner: str,
        engine: AsyncEngine | None = None,
        sender: WebhookDelivery | None = None,
        lease: timedelta = timedelta(minutes=2),
        keep_finished: int = 10_000,
        single_node: bool | None = None,
    ) -> None:
        self.gateway = gateway
        self.codec = codec
        self.owner = owner
        self.engine = engine
        self.sender = sender
        self.lease = lease
        self.keep_finished = keep_finished
        self._live: dict[str, Job] = {}  # runs or webhooks in flight in this process
        self._recent: OrderedDict[str, Job] = OrderedDict()  # finished jobs, when there is no store
        self._background: set[asyncio.Task[Any]] = set()
        # One process per store: every unfinished row at start is ours to resume. Otherwise rows
        # are claimed only when their owner's heartbeat is older than the lease.
        self._single_node = (engine is None or engine.dialect.name == "sqlite") if single_node is None else single_node

    # -- life cycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Claim what earlier processes left unfinished; keep our own rows' heartbeat going."""
        if self.engine is None:
            return
        await self.claim_orphans()
        if not self._single_node:
            self._spawn(self._heartbeat_forever())

    async def close(self) -> None:
        """Stop running; unfinished rows stay ``processing`` and the next start resumes them."""
        for task in list(self._background):
            task.cancel()
        for task in list(self._background):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.sender is not None:
            await self.sender.close()

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # -- what the dialect calls ------------------------------------------------------------------

    async def submit(self, spec: TaskSpec, principal: Principal | None, *, run: bool = True) -> tuple[Job, bool]:
        """The job for ``spec`` and whether this call started running it.

        A new task starts. An identical retry of a finished task gets it back as it is; of a task
        that failed, it runs the failed results again; of one running, it joins it. The same
        taskUUID for a different task (or another account) is a ``Conflict``. With ``run=False`` a
        caller that started the job runs it itself (``start_call``, ``complete``) and then calls
        ``release``.
        """
        job = self._live.get(spec.key) or self._recent.get(spec.key)
        if job is None:
            job = self._new(spec, principal)
            self._live[spec.key] = job  # before the insert's await: a concurrent retry joins it
            try:
                inserted = await self._insert(job)
            except BaseException:
                del self._live[spec.key]
                raise
            if inserted:
                if run:
                    self._spawn(self._run(job, job.pending()))
                return job, True
            del self._live[spec.key]
            loaded = await self._load(spec.key)
            if loaded is None:  # the other insert rolled back: nothing to join, try once more
                return await self.submit(spec, principal, run=run)
            job = loaded
        _check_same(job, spec, principal)
        if job.running or (job.finished and job.status == "success") or self._runs_elsewhere(job):
            return job, False
        await self._rerun(job, principal)
        if run:
            self._spawn(self._run(job, job.pending()))
        return job, True

    def release(self, job: Job) -> None:
        """The caller that submitted with ``run=False`` is done running ``job``."""
        job.running = False
        self._retire_if_done(job)

    async def find(self, key: str, principal: Principal | None) -> Job | None:
        """A task of this caller's account, for polling."""
        job = self._live.get(key) or self._recent.get(key) or await self._load(key)
        if job is None or job.account_id != _account_of(principal):
            return None
        return job

    async def start_call(self, job: Job, index: int) -> Call:
        """Open the generation of result ``index`` (for callers that render it as it streams)."""
        principal = job.principal
        if principal is not None and job.attempt > 1 and await self._charged_before(job, index):
            principal = None  # paid for by an earlier run: this one is free
        request_ = job.spec.requests[index]
        return await self.gateway.start(request_, principal, request_id(job.spec.key, index, job.attempt))

    async def complete(self, job: Job, index: int, outcome: Outcome) -> Item:
        """Store a finished result and send it to the webhook, if the task has one."""
        item = self.codec.render(job.spec, outcome)
        async with job.lock:
            job.items[index] = item
            if outcome.error is not None:
                job.errors[index] = outcome.error
            if job.spec.webhook_url and self.sender is not None:
                job.webhooks[index] = {"state": "pending", "attempts": []}
            await self._save(job)
        if job.finished:
            job.done.set()
        if job.webhooks[index] is not None:
            self._spawn(self._deliver(job, index))
        self._retire_if_done(job)
        return item

    def fail_pending_soon(self, job: Job, error: GatewrightError) -> None:
        """Record ``error`` for every unfinished result, in the background (callers being cancelled)."""
        self._spawn(self._fail_pending(job, error))

    def outcome_of(self, index: int, seed: int | None, error: BaseException) -> Outcome:
        if isinstance(error, GatewrightError):
            return Outcome(index, seed, error=error)
        log.exception("task result failed unexpectedly", exc_info=error)
        return Outcome(index, seed, error=InternalError(f"the task failed: {error!r}"))

    # -- running ---------------------------------------------------------------------------------

    async def _run(self, job: Job, indices: list[int]) -> None:
        try:
            await asyncio.gather(*(self._run_one(job, i) for i in indices))
        finally:
            job.running = False
            self._retire_if_done(job)

    async def _run_one(self, job: Job, index: int) -> None:
        seed = job.spec.seeds[index]
        try:
            call = await self.start_call(job, index)
            acc = await collect(call.events, 1)
            outcome = Outcome(index, seed, acc.choices[0], acc.usage, acc.cost)
        except asyncio.CancelledError:
            raise  # shutting down: the row stays processing and is resumed on the next start
        except Exception as error:
            outcome = self.outcome_of(index, seed, error)
        await self.complete(job, index, outcome)

    async def _deliver(self, job: Job, index: int) -> None:
        assert self.sender is not None and job.spec.webhook_url is not None
        state = job.webhooks[index]
        item = job.items[index]
        assert state is not None and item is not None

        async def record(attempt: Attempt) -> None:
            async with job.lock:
                state["attempts"].append(attempt.as_dict())
                await self._save(job)

        body = self.codec.webhook_body(job.spec, item)
        delivered = await self.sender.deliver(
            job.spec.webhook_url, body, f"{job.spec.uuid}:{index}", record, len(state["attempts"])
        )
        async with job.lock:
            state["state"] = "delivered" if delivered else "failed"
            await self._save(job)
        self._retire_if_done(job)

    def _retire_if_done(self, job: Job) -> None:
        if job.running or not job.finished or job.webhook_pending:
            return
        self._live.pop(job.spec.key, None)
        if self.engine is None:  # nowhere else to find it when polled
            self._recent[job.spec.key] = job
            while len(self._recent) > self.keep_finished:
                self._recent.popitem(last=False)

    async def _rerun(self, job: Job, principal: Principal | None) -> None:
        job.running = True  # before any await: a concurrent retry must join, not run it again
        async with job.lock:
            job.items = [item if item is not None and item.get("status") == "success" else None for item in job.items]
            job.attempt += 1
            job.principal = principal
            job.owner = self.owner
            job.done = asyncio.Event()
            self._live[job.spec.key] = job
            await self._save(job)

    # -- the store -------------------------------------------------------------------------------

    def _new(self, spec: TaskSpec, principal: Principal | None) -> Job:
        return Job(
            spec=spec,
            account_id=_account_of(principal),
            key_id=principal.key_id if principal else None,
            principal=principal,
            attempt=1,
            running=True,  # whoever submits it runs it
            items=[None] * len(spec.requests),
            webhooks=[None] * len(spec.requests),
            owner=self.owner,
        )

    def _values(self, job: Job) -> dict[str, Any]:
        return {
            "status": job.status,
            "results": job.items,
            "webhook_attempts": [w if w is None else {"resultIndex": i, **w} for i, w in enumerate(job.webhooks)],
            "webhook_pending": job.webhook_pending,
            "attempt": job.attempt,
            "owner": job.owner,
            "updated_at": utcnow(),
        }

    async def _insert(self, job: Job) -> bool:
        if self.engine is None:
            return True
        now = utcnow()
        row = {
            "task_uuid": job.spec.key,
            "account_id": job.account_id,
            "key_id": job.key_id,
            "task_type": job.spec.task_type,
            "request": job.spec.stored,
            "fingerprint": job.spec.fingerprint,
            "delivery": job.spec.delivery,
            "webhook_url": job.spec.webhook_url,
            "created_at": now,
            **self._values(job),
        }
        try:
            async with self.engine.begin() as conn:
                await conn.execute(insert(tasks), row)
        except IntegrityError:
            return False
        return True

    async def _save(self, job: Job) -> None:
        """Write the whole row. A failed write is logged, not raised: the job goes on from memory
        and its next write (every result and webhook attempt writes one) catches the row up."""
        if self.engine is None:
            return
        try:
            async with self.engine.begin() as conn:
                statement = update(tasks).where(tasks.c.task_uuid == job.spec.key).values(**self._values(job))
                await conn.execute(statement)
        except Exception:
            log.exception("saving task %s failed; it is written again with its next change", job.spec.key)

    async def _load(self, key: str) -> Job | None:
        if self.engine is None:
            return None
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(tasks).where(tasks.c.task_uuid == key))).first()
        return None if row is None else self._job_of(row)

    def _job_of(self, row: Any) -> Job:
        spec = self.codec.rebuild(row.request, row.fingerprint)
        count = len(spec.requests)
        items = list(row.results or [])[:count]
        items += [None] * (count - len(items))
        webhooks: list[dict[str, Any] | None] = [None] * count
        for entry in row.webhook_attempts or ():
            if isinstance(entry, dict) and 0 <= entry.get("resultIndex", -1) < count:
                webhooks[entry["resultIndex"]] = {"state": entry["state"], "attempts": list(entry["attempts"])}
        return Job(
            spec=spec,
            account_id=row.account_id,
            key_id=row.key_id,
            principal=None,
            attempt=row.attempt,
            items=items,
            webhooks=webhooks,
            owner=row.owner,
            heartbeat=aware(row.updated_at),
        )

    def _runs_elsewhere(self, job: Job) -> bool:
        """Another live process owns the row (only possible with a shared PostgreSQL store)."""
        if self._single_node or job.finished or job.owner in (None, self.owner) or job.heartbeat is None:
            return False
        return job.heartbeat > utcnow() - self.lease

    async def _charged_before(self, job: Job, index: int) -> bool:
        if self.engine is None:
            return False
        earlier = [request_id(job.spec.key, index, run) for run in range(1, job.attempt)]
        query = select(func.coalesce(func.sum(usage_records.c.credits), 0)).where(
            usage_records.c.request_id.in_(earlier)
        )
        async with self.engine.connect() as conn:
            charged = (await conn.execute(query)).scalar_one()
        return bool(charged)

    async def _principal(self, key_id: int | None) -> Principal | None:
        if self.engine is None or key_id is None:
            return None
        query = select(api_keys).where(api_keys.c.id == key_id, api_keys.c.deleted_at.is_(None))
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None or row.disabled:
            raise Unauthorized("The API key that submitted this task was deleted or disabled.", code="key_disabled")
        return principal_of(row)

    # -- taking over rows of processes that are gone ---------------------------------------------

    async def claim_orphans(self) -> int:
        """Resume rows whose owner is gone: every unfinished row on SQLite (one process per file),
        rows with a stale heartbeat on PostgreSQL."""
        assert self.engine is not None
        query = select(tasks).where(
            or_(tasks.c.status == "processing", tasks.c.webhook_pending.is_(True)),
            or_(tasks.c.owner.is_(None), tasks.c.owner != self.owner),
        )
        if not self._single_node:
            query = query.where(tasks.c.updated_at < utcnow() - self.lease)
        async with self.engine.connect() as conn:
            rows = list(await conn.execute(query))
        claimed = 0
        for row in rows:
            if row.task_uuid in self._live or not await self._claim(row.task_uuid, row.owner):
                continue
            claimed += 1
            try:
                job = self._job_of(row)
            except Exception:  # stored by a version whose task shape this one no longer reads
                log.exception("task %s cannot be rebuilt from its stored request; marked failed", row.task_uuid)
                await self._give_up(row.task_uuid)
                continue
            job.owner = self.owner
            job.running = True  # ours now: a retry arriving meanwhile joins instead of running it
            self._live[job.spec.key] = job
            try:
                await self._resume(job)
            except Exception:
                log.exception("task %s could not be resumed", row.task_uuid)
                self.release(job)
        if claimed:
            log.warning("resumed %d tasks left unfinished by an earlier gateway process", claimed)
        return claimed

    async def _claim(self, key: str, owner: str | None) -> bool:
        assert self.engine is not None
        statement = (
            update(tasks)
            .where(tasks.c.task_uuid == key, _owner_matches(owner))
            .values(owner=self.owner, updated_at=utcnow())
        )
        async with self.engine.begin() as conn:
            result = await conn.execute(statement)
        return bool(result.rowcount)

    async def _give_up(self, key: str) -> None:
        assert self.engine is not None
        error = {"message": "the stored task could not be read back by this gateway version"}
        async with self.engine.begin() as conn:
            await conn.execute(
                update(tasks)
                .where(tasks.c.task_uuid == key)
                .values(status="error", error=error, webhook_pending=False, updated_at=utcnow())
            )

    async def _resume(self, job: Job) -> None:
        for index, state in enumerate(job.webhooks):
            if state is not None and state["state"] == "pending":
                self._spawn(self._deliver(job, index))
        if not job.finished:
            error: GatewrightError
            if job.attempt >= MAX_RUNS:
                error = InternalError(f"the task was interrupted {job.attempt} times; it is not run again")
            else:
                try:
                    principal = await self._principal(job.key_id)
                except GatewrightError as refused:
                    error = refused
                else:
                    await self._rerun(job, principal)
                    self._spawn(self._run(job, job.pending()))
                    return
            await self._fail_pending(job, error)
        self.release(job)

    async def _fail_pending(self, job: Job, error: GatewrightError) -> None:
        for index in job.pending():
            await self.complete(job, index, Outcome(index, job.spec.seeds[index], error=error))

    async def _heartbeat_forever(self) -> None:
        assert self.engine is not None
        period = self.lease.total_seconds() / 4
        while True:
            await asyncio.sleep(period)
            try:
                async with self.engine.begin() as conn:
                    await conn.execute(
                        update(tasks)
                        .where(tasks.c.owner == self.owner, tasks.c.task_uuid.in_(list(self._live)))
                        .values(updated_at=utcnow())
                    )
                await self.claim_orphans()
            except Exception:  # the store is briefly unreachable: try again next beat
                log.exception("task heartbeat failed")


def _account_of(principal: Principal | None) -> int | None:
    return principal.account_id if principal is not None else None


def _check_same(job: Job, spec: TaskSpec, principal: Principal | None) -> None:
    if job.spec.fingerprint != spec.fingerprint or job.account_id != _account_of(principal):
        raise Conflict(
            f"The taskUUID {spec.uuid} already names a different task. Send each new task with a new UUID v4; "
            "resend a task unchanged to get its state back.",
            param="taskUUID",
            code="conflictTaskUUID",
        )


__all__ = [
    "Item",
    "Job",
    "Jobs",
    "Outcome",
    "TaskCodec",
    "TaskSpec",
    "request_id",
]
