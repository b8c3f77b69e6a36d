"""Durable jobs: a fixed list of generations (results) per task, each stored the moment it ends.

``Jobs`` runs a task's results through the same ``Gateway.start`` as every dialect, keeps the
task's state in a ``TaskStore`` (``store.tasks``; in memory without one), and hands finished results
to the webhook sender. It stores neutral ``Outcome``s (text, tool calls, usage, cost, finish, or an
error); the dialect renders them when it answers, polls or posts a webhook. Stored tasks name their
owner (the process running them) and carry its heartbeat; a process that starts claims the tasks
whose owner is gone and runs what they had not finished.

Billing stays exactly-once across restarts and retries. The n-th run of result i uses the request
id ``task_<uuid>_<i>_<n>`` (the ledger settles each request id at most once). A result and its
charge become durable together: the result is written ahead, marked as awaiting the charge of its
run's request id, just before that charge commits (``Gateway.start``'s ``before_charge``), and
marked final after. Whoever finds a result still awaiting its charge (a process taking the task
over after a crash, a retry) asks the ledger: charged, the result stands at what was charged;
not charged, it is dropped and the result runs again. So a replay bills once or runs again, and a
charged result is never lost. A run in the background that its process's stop cuts short is not
billed (``bill_abandoned=False``): it runs again and that run is billed, as after a crash. A
streamed result its client leaves is billed what was made, like any stream a client leaves; if the
client retries the task, that result's rerun is free and reports that charge as its cost.

What the dialect gives: a ``TaskSpec`` per task (its core requests, and the stored form it is
rebuilt from after a restart) and a ``TaskCodec`` (rebuild a spec, render a webhook body).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncGenerator, Coroutine
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from gatewright.core.accumulate import Accumulator
from gatewright.core.billing import credits_to_usd
from gatewright.core.clock import utcnow
from gatewright.core.errors import Conflict, GatewrightError, InternalError, InvalidRequest
from gatewright.core.events import Event
from gatewright.core.pipeline import BeforeCharge, Call, Gateway
from gatewright.core.platform import Principal
from gatewright.core.types import Choice, CoreRequest, Cost, Usage
from gatewright.core.webhooks import Attempt, WebhookDelivery

log = logging.getLogger("gatewright.jobs")

TaskStatus = Literal["processing", "success", "error"]
DeliveryState = Literal["pending", "delivered", "failed"]

# A task interrupted this many times (restarts, crashes) fails instead of running again.
MAX_RUNS = 5
# A result already paid for (charged by a run whose outcome a crash lost) is fetched again this many
# more times when its free rerun fails, before it is stored as failed.
FREE_RERUNS = 3


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one result ended: a choice with its usage and cost, or an error."""

    index: int
    seed: int | None
    choice: Choice | None = None
    usage: Usage = field(default_factory=Usage)
    cost: Cost | None = None
    error: GatewrightError | None = None


@dataclass(slots=True)
class WebhookState:
    """The delivery of one result to the task's webhook."""

    state: DeliveryState
    attempts: list[Attempt] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class TaskSpec:
    uuid: str  # as the client sent it; tasks are keyed by its lower-case form
    task_type: str
    stored: dict[str, Any]  # the dialect's own form of the task, kept as is; rebuilt by the codec
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

    def webhook_body(self, spec: TaskSpec, outcome: Outcome) -> bytes: ...


class JobConflict(Conflict):
    """The task's id already names a different task (or one of another account)."""


def request_id(key: str, index: int, run: int) -> str:
    return f"task_{key}_{index}_{run}"


@dataclass
class TaskRecord:
    """A task as the store keeps it."""

    key: str
    account_id: int | None
    key_id: int | None
    task_type: str
    stored: dict[str, Any]
    fingerprint: str
    delivery: str
    webhook_url: str | None
    status: TaskStatus
    outcomes: list[Outcome | None]
    webhooks: list[WebhookState | None]
    attempt: int
    owner: str | None
    updated_at: datetime | None = None  # also the owner's heartbeat
    # Results written ahead of their charge, by index: the run's request id and the outcome.
    charging: dict[int, tuple[str, Outcome]] = field(default_factory=dict)


class TaskStore(Protocol):
    """Durable tasks (``store.tasks.SqlTaskStore``)."""

    @property
    def shared(self) -> bool:
        """Whether other gateway processes may use the same store at once (then tasks are taken
        over only when their owner's heartbeat is older than the lease)."""
        ...

    async def insert(self, record: TaskRecord) -> bool:
        """False when a task with this key exists already."""
        ...

    async def save(self, record: TaskRecord) -> None:
        """Write the task's state (status, outcomes, webhooks, attempt, owner, heartbeat)."""
        ...

    async def load(self, key: str) -> TaskRecord | None: ...

    async def unfinished(self, not_owner: str, stale_before: datetime | None) -> list[TaskRecord]:
        """Tasks still running or owing webhooks, not owned by ``not_owner`` (and, when
        ``stale_before`` is given, whose heartbeat is older)."""
        ...

    async def claim(self, key: str, owner: str | None, new_owner: str) -> bool:
        """Take the task over if ``owner`` still owns it; False when someone else was first."""
        ...

    async def give_up(self, key: str, message: str) -> None:
        """Mark a task that cannot be read back as failed."""
        ...

    async def heartbeat(self, owner: str, keys: list[str]) -> None: ...


@dataclass(eq=False)
class Job:
    spec: TaskSpec
    account_id: int | None
    key_id: int | None
    principal: Principal | None
    attempt: int
    outcomes: list[Outcome | None]
    webhooks: list[WebhookState | None]
    owner: str | None = None
    heartbeat: datetime | None = None
    running: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Results an earlier run was charged for without a result (a streamed one its client left):
    # credits, by index. Their rerun is free, reports that charge as its cost, and is retried
    # rather than failed.
    paid: dict[int, int] = field(default_factory=dict)
    # Results written ahead of their charge (see the module's docstring): request id and outcome.
    charging: dict[int, tuple[str, Outcome]] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return all(outcome is not None for outcome in self.outcomes)

    @property
    def status(self) -> TaskStatus:
        if not self.finished:
            return "processing"
        return "success" if all(o is not None and o.error is None for o in self.outcomes) else "error"

    @property
    def webhook_pending(self) -> bool:
        return any(w is not None and w.state == "pending" for w in self.webhooks)

    def pending(self) -> list[int]:
        return [i for i, outcome in enumerate(self.outcomes) if outcome is None]


StreamItem = tuple[int, Event | Outcome]  # a result's index, with one of its events or how it ended


@dataclass
class StreamedRun:
    """A task run for a caller that renders it as it streams (``Jobs.stream``).

    ``started`` is False when the task already existed (finished, or running elsewhere): nothing
    runs, and the caller answers from ``job``. ``refused`` is the outcome of a sole result that
    failed before producing anything (the caller can answer with a plain error). Otherwise
    ``items`` gives every unfinished result's events in turn, each followed by its stored outcome.
    """

    job: Job
    started: bool
    items: AsyncGenerator[StreamItem, None]
    deployment: str | None = None
    refused: Outcome | None = None


async def _nothing() -> AsyncGenerator[StreamItem, None]:
    return
    yield


class Jobs:
    def __init__(
        self,
        gateway: Gateway,
        codec: TaskCodec,
        owner: str,
        store: TaskStore | None = None,
        sender: WebhookDelivery | None = None,
        lease: timedelta = timedelta(minutes=2),
        keep_finished: int = 10_000,
        single_node: bool | None = None,
    ) -> None:
        self.gateway = gateway
        self.codec = codec
        self.owner = owner
        self.store = store
        self.sender = sender
        self.lease = lease
        self.keep_finished = keep_finished
        self._live: dict[str, Job] = {}  # runs or webhooks in flight in this process
        self._recent: OrderedDict[str, Job] = OrderedDict()  # finished jobs, when there is no store
        self._background: set[asyncio.Task[Any]] = set()
        # One process per store: every unfinished task at start is ours to resume. Otherwise tasks
        # are claimed only when their owner's heartbeat is older than the lease.
        self._single_node = (store is None or not store.shared) if single_node is None else single_node

    # -- life cycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Claim what earlier processes left unfinished; keep our own tasks' heartbeat going."""
        if self.store is None:
            return
        await self.claim_orphans()
        if not self._single_node:
            self._spawn(self._heartbeat_forever())

    async def close(self) -> None:
        """Stop running; unfinished tasks stay ``processing`` and the next start resumes them."""
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

    async def submit(self, spec: TaskSpec, principal: Principal | None) -> tuple[Job, bool]:
        """The job for ``spec`` and whether this call started running it (in the background).

        A new task starts. An identical retry of a finished task gets it back as it is; of a task
        that failed, it runs the failed results again; of one running, it joins it. The same key
        for a different task (or another account) is a ``JobConflict``.
        """
        job, started = await self._admit(spec, principal)
        if started:
            self._spawn(self._run(job, job.pending()))
        return job, started

    async def find(self, key: str, principal: Principal | None) -> Job | None:
        """A task of this caller's account, for polling."""
        job = self._live.get(key) or self._recent.get(key) or await self._load(key)
        if job is None or job.account_id != _account_of(principal):
            return None
        return job

    async def stream(self, spec: TaskSpec, principal: Principal | None, aborted: GatewrightError) -> StreamedRun:
        """Submit ``spec`` and run it here, result after result, for a caller that streams it.

        The first result is started before this returns (so a failure before any output can still
        be answered plainly). Results the caller does not stay for end with ``aborted``."""
        job, started = await self._admit(spec, principal)
        if not started:
            return StreamedRun(job, False, _nothing())
        pending = job.pending()
        lead: list[Outcome] = []
        first: tuple[Call, Accumulator] | None = None
        acc = Accumulator(1)
        try:
            first = (await self._start_call(job, pending[0], acc, streamed=True), acc)
        except Exception as error:  # nothing produced yet
            outcome = await self._complete(job, pending[0], self._outcome_of(pending[0], job, error))
            if len(pending) == 1:
                self._release(job)
                return StreamedRun(job, True, _nothing(), refused=outcome)
            lead.append(outcome)
        items = self._stream_results(job, first, lead, aborted)
        return StreamedRun(job, True, items, deployment=first[0].deployment if first is not None else None)

    # -- running ---------------------------------------------------------------------------------

    async def _admit(self, spec: TaskSpec, principal: Principal | None) -> tuple[Job, bool]:
        """The job for ``spec`` and whether the caller is to run its unfinished results."""
        if spec.webhook_url and self.sender is not None:
            reason = await self.sender.refusal(spec.webhook_url)
            if reason is not None:
                raise InvalidRequest(f"Invalid 'webhookURL': {reason}.", param="webhookURL", code="invalid_webhook_url")
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
                return job, True
            del self._live[spec.key]
            loaded = await self._load(spec.key)
            if loaded is None:  # the other insert rolled back: nothing to join, try once more
                return await self._admit(spec, principal)
            job = loaded
        _check_same(job, spec, principal)
        if job.running or self._runs_elsewhere(job):
            return job, False
        await self._resolve_charging(job)
        if job.finished and job.status == "success":
            return job, False
        await self._rerun(job, principal)
        return job, True

    def _release(self, job: Job) -> None:
        """Whoever ran ``job`` is done with it."""
        job.running = False
        self._retire_if_done(job)

    async def _start_call(self, job: Job, index: int, acc: Accumulator, streamed: bool) -> Call:
        """Open the generation of result ``index``; the caller adds its events to ``acc``. Only a
        streamed result's client can leave it; a background run is cut short only by a stop."""
        principal = job.principal
        if principal is not None and job.attempt > 1:
            paid = await self._charged_before(job, index)
            if paid:
                job.paid[index] = paid
                principal = None  # paid for by an earlier run: this one is free
        request_ = job.spec.requests[index]
        run = request_id(job.spec.key, index, job.attempt)
        before_charge = self._write_ahead(job, index, run, acc)
        return await self.gateway.start(
            request_, principal, run, dialect="task-api", before_charge=before_charge, bill_abandoned=streamed
        )

    def _write_ahead(self, job: Job, index: int, run: str, acc: Accumulator) -> BeforeCharge:
        """Store the result, as awaiting the charge of ``run``, before that charge commits."""

        async def before_charge(usage: Usage, cost: Cost) -> None:
            if self.store is None:
                return
            outcome = Outcome(index, job.spec.seeds[index], acc.finish()[0], usage, cost)
            async with job.lock:
                job.charging[index] = (run, outcome)
                try:
                    await self.store.save(self._record(job))
                except asyncio.CancelledError:
                    # Cut short (a streamed result's client left, a stop): the pipeline bills it or
                    # not (``bill_abandoned``), and whether it was charged is the ledger's to say
                    # (``_charged_anyway``), as after a crash: the result stays written ahead.
                    raise
                except Exception as error:
                    job.charging.pop(index, None)  # not charged: the pipeline closes the hold unbilled
                    raise InternalError(f"the task's result could not be stored: {error!r}") from error

        return before_charge

    async def _charged_anyway(self, job: Job, index: int) -> Outcome | None:
        """The result written ahead of a charge by a run that is over, if that charge was made
        (its cost what was charged); otherwise it is dropped, and None."""
        entry = job.charging.get(index)
        if entry is None:
            return None
        run, written = entry
        platform = self.gateway.platform
        charged = 0 if platform is None else await platform.ledger.charged([run])
        if charged:
            return replace(written, cost=Cost(charged, credits_to_usd(charged)))
        job.charging.pop(index, None)
        return None

    async def _resolve_charging(self, job: Job) -> None:
        """Keep each result written ahead whose charge was made; the others run again."""
        for index in list(job.charging):
            outcome = await self._charged_anyway(job, index)
            if outcome is not None:
                await self._complete(job, index, outcome)

    async def _complete(self, job: Job, index: int, outcome: Outcome) -> Outcome:
        """Store a finished result and send it to the webhook, if the task has one."""
        async with job.lock:
            job.outcomes[index] = outcome
            job.charging.pop(index, None)
            if job.spec.webhook_url and self.sender is not None:
                job.webhooks[index] = WebhookState("pending")
            await self._save(job)
        if job.finished:
            job.done.set()
        if job.webhooks[index] is not None:
            self._spawn(self._deliver(job, index))
        self._retire_if_done(job)
        return outcome

    def _outcome_of(self, index: int, job: Job, error: BaseException) -> Outcome:
        seed = job.spec.seeds[index]
        if isinstance(error, GatewrightError):
            return Outcome(index, seed, error=error)
        log.exception("task result failed unexpectedly", exc_info=error)
        return Outcome(index, seed, error=InternalError(f"the task failed: {error!r}"))

    async def _run(self, job: Job, indices: list[int]) -> None:
        try:
            await asyncio.gather(*(self._run_one(job, i) for i in indices))
        finally:
            self._release(job)

    async def _run_one(self, job: Job, index: int) -> None:
        for attempt in range(FREE_RERUNS + 1):
            acc = Accumulator(1)
            try:
                call = await self._start_call(job, index, acc, streamed=False)
                async for event in call.events:
                    acc.add(event)
                choice = acc.finish()[0]
                outcome = Outcome(index, job.spec.seeds[index], choice, acc.usage, self._cost(job, index, acc.cost))
            except asyncio.CancelledError:
                raise  # shutting down: the task stays processing and is resumed on the next start
            except Exception as error:
                outcome = await self._charged_anyway(job, index) or self._outcome_of(index, job, error)
                if outcome.error is not None and index in job.paid and attempt < FREE_RERUNS:
                    continue  # the client paid for this result: fetch it again rather than fail it
            break
        await self._complete(job, index, outcome)

    @staticmethod
    def _cost(job: Job, index: int, cost: Cost | None) -> Cost | None:
        """What the result cost: an earlier run's charge when this run was free."""
        paid = job.paid.get(index)
        return cost if paid is None else Cost(paid, credits_to_usd(paid))

    async def _stream_results(
        self, job: Job, first: tuple[Call, Accumulator] | None, lead: list[Outcome], aborted: GatewrightError
    ) -> AsyncGenerator[StreamItem, None]:
        """Every unfinished result, one after the other; each is stored as it ends."""
        try:
            for outcome in lead:
                yield outcome.index, outcome
            for index in job.pending():
                started, first = first, None
                async for item in self._stream_one(job, index, started):
                    yield item
        finally:
            if job.pending():
                self._spawn(self._fail_pending(job, aborted))
            self._release(job)

    async def _stream_one(
        self, job: Job, index: int, started: tuple[Call, Accumulator] | None
    ) -> AsyncGenerator[StreamItem, None]:
        if started is None:
            acc = Accumulator(1)
            try:
                call = await self._start_call(job, index, acc, streamed=True)
            except Exception as error:
                yield index, await self._complete(job, index, self._outcome_of(index, job, error))
                return
        else:
            call, acc = started
        try:
            async for event in call.events:
                acc.add(event)
                yield index, event
        except Exception as error:
            outcome = await self._charged_anyway(job, index) or self._outcome_of(index, job, error)
            yield index, await self._complete(job, index, outcome)
            return
        finally:
            await call.aclose()
        choice = acc.finish()[0]
        outcome = Outcome(index, job.spec.seeds[index], choice, acc.usage, self._cost(job, index, acc.cost))
        yield index, await self._complete(job, index, outcome)

    async def _deliver(self, job: Job, index: int) -> None:
        assert self.sender is not None and job.spec.webhook_url is not None
        state = job.webhooks[index]
        outcome = job.outcomes[index]
        assert state is not None and outcome is not None

        async def record(attempt: Attempt) -> None:
            async with job.lock:
                state.attempts.append(attempt)
                await self._save(job)

        body = self.codec.webhook_body(job.spec, outcome)
        delivered = await self.sender.deliver(
            job.spec.webhook_url, body, f"{job.spec.uuid}:{index}", record, len(state.attempts)
        )
        async with job.lock:
            state.state = "delivered" if delivered else "failed"
            await self._save(job)
        self._retire_if_done(job)

    def _retire_if_done(self, job: Job) -> None:
        if job.running or not job.finished or job.webhook_pending:
            return
        self._live.pop(job.spec.key, None)
        if self.store is None:  # nowhere else to find it when polled
            self._recent[job.spec.key] = job
            while len(self._recent) > self.keep_finished:
                self._recent.popitem(last=False)

    async def _rerun(self, job: Job, principal: Principal | None) -> None:
        job.running = True  # before any await: a concurrent retry must join, not run it again
        async with job.lock:
            job.outcomes = [o if o is not None and o.error is None else None for o in job.outcomes]
            job.attempt += 1
            job.principal = principal
            job.owner = self.owner
            job.done = asyncio.Event()
            self._live[job.spec.key] = job
            await self._save(job)

    async def _charged_before(self, job: Job, index: int) -> int:
        """Credits the earlier runs of result ``index`` were charged (at most one run is)."""
        platform = self.gateway.platform
        if platform is None:
            return 0
        earlier = [request_id(job.spec.key, index, run) for run in range(1, job.attempt)]
        return await platform.ledger.charged(earlier)

    async def _principal(self, key_id: int | None) -> Principal | None:
        platform = self.gateway.platform
        if platform is None or key_id is None:
            return None
        return await platform.authenticator.principal_of_key(key_id)

    # -- the store -------------------------------------------------------------------------------

    def _new(self, spec: TaskSpec, principal: Principal | None) -> Job:
        return Job(
            spec=spec,
            account_id=_account_of(principal),
            key_id=principal.key_id if principal else None,
            principal=principal,
            attempt=1,
            running=True,  # whoever submits it runs it
            outcomes=[None] * len(spec.requests),
            webhooks=[None] * len(spec.requests),
            owner=self.owner,
        )

    def _record(self, job: Job) -> TaskRecord:
        spec = job.spec
        return TaskRecord(
            key=spec.key,
            account_id=job.account_id,
            key_id=job.key_id,
            task_type=spec.task_type,
            stored=spec.stored,
            fingerprint=spec.fingerprint,
            delivery=spec.delivery,
            webhook_url=spec.webhook_url,
            status=job.status,
            outcomes=job.outcomes,
            webhooks=job.webhooks,
            attempt=job.attempt,
            owner=job.owner,
            updated_at=utcnow(),
            charging=dict(job.charging),
        )

    async def _insert(self, job: Job) -> bool:
        return True if self.store is None else await self.store.insert(self._record(job))

    async def _save(self, job: Job) -> None:
        """Write the task's state. A failed write is logged, not raised: the job goes on from memory
        and its next write (every result and webhook attempt writes one) catches the store up."""
        if self.store is None:
            return
        try:
            await self.store.save(self._record(job))
        except Exception:
            log.exception("saving task %s failed; it is written again with its next change", job.spec.key)

    async def _load(self, key: str) -> Job | None:
        if self.store is None:
            return None
        record = await self.store.load(key)
        return None if record is None else self._job_of(record)

    def _job_of(self, record: TaskRecord) -> Job:
        spec = self.codec.rebuild(record.stored, record.fingerprint)
        count = len(spec.requests)
        outcomes = (record.outcomes + [None] * count)[:count]
        webhooks = (record.webhooks + [None] * count)[:count]
        return Job(
            spec=spec,
            account_id=record.account_id,
            key_id=record.key_id,
            principal=None,
            attempt=record.attempt,
            outcomes=outcomes,
            webhooks=webhooks,
            owner=record.owner,
            heartbeat=record.updated_at,
            charging={i: entry for i, entry in record.charging.items() if i < count},
        )

    def _runs_elsewhere(self, job: Job) -> bool:
        """Another live process owns the task (only possible with a shared store)."""
        if self._single_node or job.finished or job.owner in (None, self.owner) or job.heartbeat is None:
            return False
        return job.heartbeat > utcnow() - self.lease

    # -- taking over tasks of processes that are gone --------------------------------------------

    async def claim_orphans(self) -> int:
        """Resume tasks whose owner is gone: every unfinished one on a store of our own, those with
        a stale heartbeat on a shared one."""
        assert self.store is not None
        stale_before = None if self._single_node else utcnow() - self.lease
        claimed = 0
        for record in await self.store.unfinished(self.owner, stale_before):
            if record.key in self._live or not await self.store.claim(record.key, record.owner, self.owner):
                continue
            claimed += 1
            try:
                job = self._job_of(record)
            except Exception:  # stored by a version whose task shape this one no longer reads
                log.exception("task %s cannot be rebuilt from its stored request; marked failed", record.key)
                await self.store.give_up(record.key, "the stored task could not be read back by this gateway version")
                continue
            job.owner = self.owner
            job.running = True  # ours now: a retry arriving meanwhile joins instead of running it
            self._live[job.spec.key] = job
            try:
                await self._resume(job)
            except Exception:
                log.exception("task %s could not be resumed", record.key)
                self._release(job)
        if claimed:
            log.warning("resumed %d tasks left unfinished by an earlier gateway process", claimed)
        return claimed

    async def _resume(self, job: Job) -> None:
        for index, state in enumerate(job.webhooks):
            if state is not None and state.state == "pending":
                self._spawn(self._deliver(job, index))
        await self._resolve_charging(job)
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
        self._release(job)

    async def _fail_pending(self, job: Job, error: GatewrightError) -> None:
        """End the unfinished results with ``error``, but for those whose charge was made."""
        for index in job.pending():
            charged = await self._charged_anyway(job, index)
            await self._complete(job, index, charged or Outcome(index, job.spec.seeds[index], error=error))

    async def _heartbeat_forever(self) -> None:
        assert self.store is not None
        period = self.lease.total_seconds() / 4
        while True:
            await asyncio.sleep(period)
            try:
                await self.store.heartbeat(self.owner, list(self._live))
                await self.claim_orphans()
            except Exception:  # the store is briefly unreachable: try again next beat
                log.exception("task heartbeat failed")


def _account_of(principal: Principal | None) -> int | None:
    return principal.account_id if principal is not None else None


def _check_same(job: Job, spec: TaskSpec, principal: Principal | None) -> None:
    if job.spec.fingerprint != spec.fingerprint or job.account_id != _account_of(principal):
        raise JobConflict(f"The id {spec.uuid} already names a different task.", code="job_conflict")


__all__ = [
    "Job",
    "JobConflict",
    "Jobs",
    "Outcome",
    "StreamItem",
    "StreamedRun",
    "TaskCodec",
    "TaskRecord",
    "TaskSpec",
    "TaskStore",
    "WebhookState",
    "request_id",
]
