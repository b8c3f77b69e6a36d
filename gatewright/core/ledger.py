"""Credits: reserve before work, settle once after, every balance change a ledger row.

Requests' reservations and settlements go through one writer task that applies whatever has
queued up in a single transaction (group commit): under load hundreds of them share one commit,
and each caller still waits for its own outcome. Grants and releases of stale holds are applied
straight away in a transaction of their own (they are rare, and the CLI grants without a running
writer). Every operation is decided by the pure rules of ``core.ledger_rules`` and applied by the
``LedgerStore`` (``store.ledger``: it locks the rows involved, so decisions made on the values read
are safe against other writers and other gateway replicas, and it picks the database driver).

A batch that fails (a deadlock between replicas, a dropped connection) is tried again; both kinds
of operation are idempotent per request id, so a retry after a commit whose answer was lost
changes nothing twice. Settlements that still cannot be written are retried in the background
until they are, because a settlement must never be lost. A finished request's settlement is
durable before its answer ends (``core.settling.charge``): an answer a client received is billed
even if the process dies the next instant.

With credit leases (``core.ledger_leases``, the default of a serving gateway) a request's
reservation is made in memory against credits its process holds in the store in bulk, and its
settlement is charged against them; the lease grows (a commit the request waits for) only when
its unused part does not cover the request's worst case. With a ``Journal`` as well (the default
of a serving gateway, ``store.journal``) the settlement is written to a local append-only file
before the answer ends and committed after it, in groups: no request waits for a commit at all.
Whoever starts next applies what a dead process's journal holds (``apply_journals``, before any
lease is closed), once per request id, then closes that process's leases.

Guarantees, each tested: a request is settled at most once (holds change state from ``held``
exactly once); a charge never exceeds its hold, so neither the balance (never below zero) nor a
key's spend limit is overrun; failed and refused requests cost nothing; holds whose process died
are released, not billed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

from gatewright.core.clock import utcnow
from gatewright.core.errors import GatewrightError, InternalError
from gatewright.core.ledger_leases import LeaseBook, LeasePolicy, LeaseState, tend_forever
from gatewright.core.ledger_rules import (
    Grant,
    LeaseCharge,
    LeaseExpiry,
    LeaseGrow,
    LeaseReturn,
    Operation,
    Redemption,
    Release,
    Reservation,
    lease_charge,
)
from gatewright.core.metrics import record_ledger_commit
from gatewright.core.platform import Hold, Principal, Settlement
from gatewright.core.types import Cost, Usage

log = logging.getLogger("gatewright.ledger")

# Pauses before trying a failed batch again; after the last, reservations fail and settlements
# are tried again in the background every BACKGROUND_RETRY seconds until they are written.
RETRY_DELAYS = (0.05, 0.25, 1.0)
BACKGROUND_RETRY = 5.0
# How long unwaited settlements wait for company to share their commit (see LedgerWriter._linger).
SETTLEMENT_LINGER = 0.005
FENCE_MARGIN = 0.05  # beyond a lease's confirmation window, for the clocks' reading


class LedgerStore(Protocol):
    """Where the ledger's operations are applied (``store.ledger.SqlLedgerStore``)."""

    def start(self) -> None: ...

    async def close(self) -> None: ...

    async def apply(self, batch: Sequence[Operation], retry: bool) -> list[Any]:
        """In one transaction: lock the rows the batch involves, decide each operation in order
        with ``ledger_rules.decide_batch``, write the changes; the outcomes, in order.

        ``retry``: an earlier attempt of this batch may have committed without our knowing."""
        ...

    async def open_holds(self, older_than: timedelta | None) -> list[Release]:
        """The holds still open (older than ``older_than``, if given), as releases."""
        ...

    async def charged(self, request_ids: Sequence[str]) -> int:
        """Credits charged to these requests in all."""
        ...

    async def expired_leases(self, before: datetime | None) -> list[LeaseExpiry]:
        """Leases still held that expired before ``before`` (None: all), as expiries."""
        ...

    async def held_leases(self, owners: Collection[str]) -> list[LeaseExpiry]:
        """Leases these processes still hold, as expiries that close them now (``before`` None)."""
        ...

    async def lease_states(self, lease_ids: Sequence[str]) -> dict[str, LeaseState]:
        """Each lease as the store has it (see ``LeaseState``)."""
        ...


class AdoptedJournal(Protocol):
    """What a process that is gone left in its journal, held by this process until finished."""

    charges: list[LeaseCharge]

    @property
    def owner(self) -> str:
        """The process that wrote it (the owner its leases are held under)."""
        ...

    def finish(self) -> None:
        """Applied: the journal goes."""

    def leave(self) -> None:
        """Not applied: the next sweep tries again."""


class Journal(Protocol):
    """Where a lease charge is durable before its commit (``store.journal.SettlementJournal``)."""

    def append(self, charge: LeaseCharge) -> object:
        """Write the charge; returns a ticket for ``committed``. Raises ``OSError`` when it could
        not be written (then the request waits for the commit instead)."""
        ...

    def committed(self, ticket: object) -> None:
        """The charge of ``ticket`` is in the store."""

    def close(self) -> None:
        """At stop, after the writer's last commit."""

    def adopt(self) -> Sequence[AdoptedJournal]:
        """Journals of processes that are gone."""
        ...

    def has_segments(self, owner: str) -> bool:
        """Whether a journal of ``owner`` is still there (its own, or another adopter's)."""
        ...


class _Barrier:
    """Resolves once everything queued before it is written (``LedgerWriter.flush``)."""


_BARRIER = _Barrier()
Work = Reservation | Settlement | LeaseGrow | LeaseCharge | LeaseReturn | _Barrier


@dataclass(slots=True)
class _Op:
    work: Work
    future: asyncio.Future[Any]
    ticket: object = None  # its line in the journal, until committed


def _waited(op: _Op) -> bool:
    """What a caller waits on: a batch holding one is committed without lingering for company.
    A finished request's settlement ("ok") is waited on unless the journal holds it: its answer's
    last byte goes out only once it is durable. Settlements of failed or abandoned requests nobody
    waits for, nor the upkeep of leases."""
    work = op.work
    if isinstance(work, Settlement | LeaseCharge):
        return work.status == "ok" and op.ticket is None
    return not isinstance(work, LeaseReturn)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _consume(future: asyncio.Future[Any]) -> None:
    # Failures are logged by the writer; a caller that did not wait must not trigger
    # "exception was never retrieved".
    if not future.cancelled():
        future.exception()


class LedgerWriter:
    """The ``core.platform.Ledger`` and ``core.accounts.CreditLedger`` over a ``LedgerStore``."""

    def __init__(
        self,
        store: LedgerStore,
        max_batch: int = 512,
        retry_delays: tuple[float, ...] = RETRY_DELAYS,
        background_retry: float = BACKGROUND_RETRY,
        linger: float = SETTLEMENT_LINGER,
        leases: LeasePolicy | None = None,
        owner: str = "gateway",
        journal: Journal | None = None,
    ) -> None:
        self.store = store
        self.max_batch = max_batch
        self.retry_delays = retry_delays
        self.background_retry = background_retry
        self.linger = linger
        self.journal = journal
        self._queue: asyncio.Queue[_Op | None] = asyncio.Queue()
        self._hurry: asyncio.Future[None] | None = None  # while the writer lingers (see _linger)
        self._task: asyncio.Task[None] | None = None
        self._retrying: dict[asyncio.TimerHandle, Callable[[], None]] = {}
        # Request ids of holds this process made and has not yet settled (see wait_settled).
        self._unsettled: set[str] = set()
        self._settled_one = asyncio.Event()
        self.leases = LeaseBook(leases, owner, self._submit, store.lease_states) if leases is not None else None
        self._tending: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ledger-writer")
        if self.leases is not None:
            every = min(1.0, self.leases.policy.ttl / 6)  # leases are extended every ttl / 3
            self._tending = asyncio.create_task(tend_forever(self.leases, every), name="ledger-leases")
        self.store.start()

    async def close(self) -> None:
        """Write everything queued, give back every lease, then stop."""
        if self._tending is not None:
            self._tending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tending
            self._tending = None
        for handle, again in list(self._retrying.items()):  # waiting settlements get one last try
            handle.cancel()
            again()
        if self._task is not None:
            self._put(None)
            await self._task
            self._task = None
            if self.leases is not None and (returns := self.leases.closing()):
                try:
                    await self.store.apply(returns, retry=False)
                except Exception as failure:  # they expire instead: any replica's sweep closes them
                    log.warning("giving back %d credit leases at stop failed: %r", len(returns), failure)
        if self.journal is not None:
            self.journal.close()
        await self.store.close()

    def _submit(self, work: Operation, ticket: object = None) -> asyncio.Future[Any]:
        """Queue an operation for the writer (the lease book's way in); resolves to its outcome."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_consume)
        self._put(_Op(cast(Work, work), future, ticket))
        return future

    def _journaled(self, charge: LeaseCharge) -> object:
        """The charge's ticket in the journal; None without one, or when writing it failed."""
        if self.journal is None:
            return None
        try:
            return self.journal.append(charge)
        except OSError as failure:
            request_id = charge.hold.request_id
            log.error("journaling settlement %s failed; it waits for its commit: %r", request_id, failure)
            return None

    async def give_back_idle(self, account_id: int) -> None:
        """Close this process's credit leases of the account that no request uses now (written
        before it returns); other processes give theirs back once idle (``LeasePolicy.idle``)."""
        if self.leases is not None:
            for closed in self.leases.give_back_idle(account_id):
                with contextlib.suppress(GatewrightError):
                    await closed

    async def fence(self) -> None:
        """Wait until a change of an account or key limit counts for every lease in every process
        (each is confirmed against the store at most ``LeasePolicy.confirm`` before it is used).
        Whoever changes them waits, with or without leases of its own: other processes may hold some."""
        await asyncio.sleep(LeasePolicy().confirm + FENCE_MARGIN)

    async def flush(self) -> None:
        """Wait until everything queued so far is written: reads after it see every settlement
        this process has started (the billing API reads the balance this way)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._put(_Op(_BARRIER, future))
        with contextlib.suppress(GatewrightError):  # a failed batch: read what is there
            await future

    # -- the Ledger protocol ------------------------------------------------------------------

    async def reserve(self, principal: Principal, credits: int, request_id: str, model: str) -> Hold:
        if self.leases is not None:
            leased = await self.leases.reserve(principal, credits, request_id, model)
            self._unsettled.add(request_id)
            return leased
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._put(_Op(Reservation(principal, credits, request_id, model), future))
        try:
            hold: Hold = await asyncio.shield(future)
        except asyncio.CancelledError:
            # The caller left while the hold was being written: release it once it exists.
            future.add_done_callback(self._release_orphan)
            raise
        self._unsettled.add(hold.request_id)
        return hold

    def _release_orphan(self, future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is None:
            hold: Hold = future.result()
            self.settle(Settlement(hold, Usage(), Cost(0, 0.0), "aborted", hold.model))

    async def wait_settled(self, within: float) -> int:
        """Wait (at most ``within`` s) until every hold this process made is settled: at a stop,
        requests cut short settle as they unwind, and must be queued before ``close``. Returns how
        many are still open (holds of work that outlives the process, taken over after restart)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while self._unsettled:
                    self._settled_one.clear()
                    await self._settled_one.wait()
        return len(self._unsettled)

    def settle(self, settlement: Settlement) -> asyncio.Future[Any]:
        request_id = settlement.hold.request_id
        self._unsettled.discard(request_id)
        self._settled_one.set()
        if self.leases is not None and self.leases.owns(request_id):
            charge, on_commit = self.leases.charge(settlement)
            ticket = self._journaled(charge)
            committed = self._submit(charge, ticket)
            committed.add_done_callback(on_commit)
            if ticket is None:
                return committed
            # Durable in the journal: the caller need not wait for the commit. The store charges
            # the same (at most the hold, taken from the lease that holds it).
            told: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            told.set_result(lease_charge(settlement))
            return told
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_consume)
        self._put(_Op(settlement, future))
        return future

    async def charged(self, request_ids: Sequence[str]) -> int:
        """Credits charged to these requests so far, counting settlements still queued here."""
        await self.flush()
        return await self.store.charged(request_ids)

    # -- operations applied in a transaction of their own ---------------------------------------

    async def grant(self, account_id: int, credits: int, note: str, actor: str | None = None) -> int:
        """Add (or, negative, remove) credits; returns the new balance. Not retried: a grant has no
        request id to make a second attempt harmless, so a failure is the caller's to see."""
        (outcome,) = await self.store.apply([Grant(account_id, credits, note, actor)], retry=False)
        if isinstance(outcome, GatewrightError):
            raise outcome
        return int(outcome)

    async def redeem(self, account_id: int, code_hash: str, actor: str | None = None) -> int:
        """Spend a redemption code for the account; returns the credits added. Not retried (a
        lost answer is safe to repeat anyway: the code is spent at most once)."""
        (outcome,) = await self.store.apply([Redemption(account_id, code_hash, actor)], retry=False)
        if isinstance(outcome, GatewrightError):
            raise outcome
        return int(outcome)

    async def release_stale(self, older_than: timedelta | None) -> int:
        """Release holds of requests that can no longer finish (their process is gone).

        ``older_than=None`` releases every open hold: right for a single-node store at start-up.
        Replicas sharing PostgreSQL release only holds older than the longest possible request.
        Released holds are not billed: the tokens their requests produced are unknown.
        Charges a stopped process left in its journal are applied first, so their leases still
        hold them."""
        await self.apply_journals()
        stale = await self.store.open_holds(older_than)
        released = sum(await self.store.apply(stale, retry=False)) if stale else 0
        if released:
            log.warning("released %d holds of requests interrupted by a restart (not billed)", released)
        # Leases: every one when the store is this process's alone, else those whose holder
        # stopped extending them (each re-checked under lock).
        expired = await self.store.expired_leases(None if older_than is None else utcnow())
        if expired:
            given_back = sum(await self.store.apply(expired, retry=False))
            log.warning("closed expired credit leases of stopped processes (%d credits back)", given_back)
        return int(released)

    async def apply_journals(self) -> int:
        """Apply the charges stopped processes left in their journals (each at most once: a line
        applied before, by them or by another adopter, finds its request billed). Returns how many.

        Then close the credit leases of those processes, once none of their journal is left (so
        every charge they journaled came out of its lease first): a journal nobody holds locked is
        a process that is gone, so nothing will reserve against them again, and their credits
        come back now instead of when the leases expire (``LeasePolicy.ttl`` and the sweep after
        it). A worker that dies is replaced, and its replacement does this as it starts."""
        if self.journal is None:
            return 0
        applied = 0
        journals = list(self.journal.adopt())
        for number, adopted in enumerate(journals):
            try:
                for start in range(0, len(adopted.charges), self.max_batch):
                    await self.store.apply(adopted.charges[start : start + self.max_batch], retry=True)
            except BaseException:
                for left in journals[number:]:  # unlocked: the next sweep, here or elsewhere, tries again
                    left.leave()
                raise
            adopted.finish()
            applied += len(adopted.charges)
        if applied:
            log.warning("applied %d settlements a stopped process left in its journal", applied)
        gone = {adopted.owner for adopted in journals if not self.journal.has_segments(adopted.owner)}
        leases = await self.store.held_leases(sorted(gone)) if gone else []
        if leases:
            given_back = sum(await self.store.apply(leases, retry=False))
            log.warning("closed %d credit leases of stopped processes (%d credits back)", len(leases), given_back)
        return applied

    # -- the writer ------------------------------------------------------------------------------

    async def _run(self) -> None:
        stop = False
        while not stop:
            op = await self._queue.get()
            if op is None:
                return
            batch: list[_Op] = [op]
            stop = self._drain(batch)
            if not stop and not any(_waited(o) for o in batch):
                stop = await self._linger(batch)
            await self._commit(batch)

    def _drain(self, batch: list[_Op]) -> bool:
        """Move what is queued into ``batch``; True when the writer was told to stop."""
        while len(batch) < self.max_batch and not self._queue.empty():
            more = self._queue.get_nowait()
            if more is None:
                return True
            batch.append(more)
        return False

    def _put(self, op: _Op | None) -> None:
        self._queue.put_nowait(op)
        if self._hurry is not None and not self._hurry.done() and (op is None or _waited(op)):
            self._hurry.set_result(None)  # someone waits for this one: the lingering batch commits now

    async def _linger(self, batch: list[_Op]) -> bool:
        """Settlements nobody waits on (journaled, aborted, failed) wait a moment for company:
        those queued meanwhile share one commit. The wait ends early when an operation somebody
        waits for is queued (one timer a batch, not one per operation: this runs per request)."""
        loop = asyncio.get_running_loop()
        hurry = self._hurry = loop.create_future()
        timer = loop.call_later(self.linger, _wake, hurry)
        try:
            await hurry
        finally:
            timer.cancel()
            self._hurry = None
        return self._drain(batch)

    async def _commit(self, batch: list[_Op]) -> None:
        error: Exception | None = None
        for attempt, delay in enumerate((0.0, *self.retry_delays)):
            if delay:
                await asyncio.sleep(delay)
            try:
                outcomes = await self._transaction([op.work for op in batch], retry=attempt > 0)
            except Exception as failure:  # rolled back: nothing of the batch happened
                error = failure
                log.warning("ledger commit of %d operations failed (attempt %d): %r", len(batch), attempt + 1, failure)
                continue
            for op, outcome in zip(batch, outcomes, strict=True):
                if op.ticket is not None and self.journal is not None:
                    self.journal.committed(op.ticket)
                    op.ticket = None
                if op.future.done():
                    continue
                if isinstance(outcome, GatewrightError):
                    op.future.set_exception(outcome)
                else:
                    op.future.set_result(outcome)
            return
        log.error("ledger commit of %d operations failed for good: %r", len(batch), error)
        for op in batch:
            if isinstance(op.work, Settlement | LeaseCharge):
                self._retry_later(op.work, op.ticket)
            if not op.future.done():
                op.future.set_exception(InternalError(f"The billing store is unavailable: {error!r}"))

    def _retry_later(self, work: Settlement | LeaseCharge, ticket: object = None) -> None:
        loop = asyncio.get_running_loop()

        def again() -> None:
            self._retrying.pop(handle, None)
            future = loop.create_future()
            future.add_done_callback(_consume)
            self._put(_Op(work, future, ticket))

        handle = loop.call_later(self.background_retry, again)
        self._retrying[handle] = again

    async def _transaction(self, batch: list[Work], retry: bool) -> list[Any]:
        operations = cast(list[Operation], [work for work in batch if work is not _BARRIER])
        if not operations:
            return [None] * len(batch)  # nothing to write: everything before them is committed
        began = time.perf_counter()
        outcomes = await self.store.apply(operations, retry)
        record_ledger_commit(time.perf_counter() - began)
        if len(operations) == len(batch):
            return outcomes
        # Barriers resolve with the batch they are in: everything queued before them is in it.
        decided = iter(outcomes)
        return [None if work is _BARRIER else next(decided) for work in batch]
