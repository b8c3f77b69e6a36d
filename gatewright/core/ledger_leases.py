"""Credit leases: a process holds credits of one (account, key) in bulk, in the store, and reserves
each request's worst case against them in memory, so a request commits nothing before it runs.

The store side is decided in ``core.ledger_rules`` (``LeaseGrow``, ``LeaseCharge``, ``LeaseReturn``,
``LeaseExpiry``) and applied by the ledger's one writer like every other operation; a lease's
credits count in the account's ``reserved`` and the key's ``period_reserved``, so processes and
replicas together never pass a balance or a key's limit. This module keeps the holder's side:

* A reservation fits when the lease's unused part covers the request's worst case; otherwise the
  lease grows first (a commit, waited on: the request starts only once its worst case is held).
* Memory never counts more than the store holds: a grow is counted once committed, a charge as
  soon as it is queued (at most the hold; what the store charged less is counted back).
* A settlement is durable before the answer's last byte (``LeaseCharge``): in the settlement
  journal when the writer has one (``core.ledger.Journal``), else in its commit.
* The store confirms a lease at most ``confirm`` seconds before it is used (still held, account
  not disabled, the key's limit the one it was taken under); whoever disables an account or
  changes a limit waits that long (``LedgerWriter.fence``), so the change counts at once everywhere.
* A lease nobody uses for ``idle`` seconds goes back; a live holder extends its expiry every
  ``ttl / 3`` seconds; a dead holder's lease expires and any replica's sweep closes it (its
  requests died with it, unanswered and unbilled, as with a hold released after a crash).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from gatewright.core.errors import GatewrightError, InternalError
from gatewright.core.ledger_rules import LeaseCharge, LeaseGone, LeaseGrow, LeaseReturn, Operation, lease_charge
from gatewright.core.platform import Hold, Principal, Settlement

log = logging.getLogger("gatewright.ledger")


@dataclass(frozen=True, slots=True)
class LeasePolicy:
    ttl: float = 30.0  # the store closes a lease this long after its holder last extended it
    confirm: float = 0.5  # reserve in memory only this long after the store confirmed the lease
    idle: float = 2.0  # a lease with no request open this long goes back
    grow: int = 8  # a grow takes this many worst cases beyond what it needs (or twice the last grow)...
    cap: int = 256  # ...but never more than this many worst cases


@dataclass(frozen=True, slots=True)
class LeaseState:
    """A lease as the store has it, for its holder's confirmation."""

    held: bool
    disabled: bool  # its account's
    threshold: int | None  # its key's spend limit


Submit = Callable[[Operation], "asyncio.Future[Any]"]
ReadStates = Callable[[Sequence[str]], Awaitable[dict[str, LeaseState]]]
_UNKNOWN = object()


class _Lease:
    __slots__ = (
        "account_id",
        "confirmed_until",
        "extended",
        "growing",
        "id",
        "key_id",
        "last_active",
        "last_added",
        "lost",
        "open",
        "size",
        "threshold",
        "used",
    )

    def __init__(self, lease_id: str, principal: Principal, now: float) -> None:
        self.id = lease_id
        self.account_id, self.key_id = principal.account_id, principal.key_id
        self.size = 0  # credits the store holds for it, as far as this process may count them
        self.used = 0  # worst cases of the requests open against it
        self.open = 0
        self.growing: asyncio.Future[Any] | None = None
        self.confirmed_until = 0.0
        self.threshold: object = _UNKNOWN
        self.lost = False  # closed, revoked or given back: no new request uses it
        self.last_added = 0  # what its last grow added: the next one asks for twice that
        self.last_active = self.extended = now


class LeaseBook:
    """The leases of one process, over the ledger writer's queue (``submit``)."""

    def __init__(self, policy: LeasePolicy, owner: str, submit: Submit, read_states: ReadStates) -> None:
        self.policy = policy
        self.owner = owner
        self._submit = submit
        self._read_states = read_states
        self._ttl = timedelta(seconds=policy.ttl)
        self._leases: dict[tuple[int, int], _Lease] = {}
        self._open: dict[str, _Lease] = {}  # request id → the lease its reservation is against
        self._draining: set[_Lease] = set()  # lost leases still serving open requests
        self._confirming: asyncio.Future[None] | None = None
        self._numbers = itertools.count(1)

    # -- reserving ----------------------------------------------------------------------------------

    async def reserve(self, principal: Principal, credits: int, request_id: str, model: str) -> Hold:
        loop = asyncio.get_running_loop()
        confirmed = False
        while True:
            lease = self._lease_of(principal, loop.time())
            if lease.size - lease.used >= credits:
                left = lease.confirmed_until - loop.time()
                if not confirmed and left <= 0:
                    await self._confirm()
                    confirmed = True
                    continue
                if left < self.policy.confirm / 2 and self._confirming is None:
                    self._confirm_ahead()  # under steady traffic no request waits for a confirmation
                lease.used += credits
                lease.open += 1
                lease.last_active = loop.time()
                self._open[request_id] = lease
                return Hold(request_id, principal.account_id, principal.key_id, principal.prefix, credits, model)
            if lease.growing is not None:
                await asyncio.wait([lease.growing])  # its outcome is counted by its callback
                continue
            await self._grow(lease, principal, credits)
            confirmed = True  # the grow's transaction read the account and the key just now

    def _lease_of(self, principal: Principal, now: float) -> _Lease:
        lease = self._leases.get((principal.account_id, principal.key_id))
        if lease is None:
            lease_id = f"{self.owner}-{principal.key_id}-{next(self._numbers)}"
            lease = self._leases[(principal.account_id, principal.key_id)] = _Lease(lease_id, principal, now)
        return lease

    async def _grow(self, lease: _Lease, principal: Principal, credits: int) -> None:
        loop = asyncio.get_running_loop()
        need = lease.used + credits - lease.size
        # Busy leases grow in doubling steps (fewer commits), up to ``cap`` worst cases at a time.
        extra = min(max(self.policy.grow * credits, 2 * lease.last_added), self.policy.cap * credits)
        sent = loop.time()
        future = self._submit(LeaseGrow(lease.id, principal, need, extra, credits, self._ttl))

        def grown(done: asyncio.Future[Any]) -> None:
            lease.growing = None
            if done.cancelled() or done.exception() is not None:
                return
            outcome = done.result()
            if isinstance(outcome, LeaseGone):
                self._lose(lease)
            elif not lease.lost:  # a lost lease's store credits all go back when it closes
                added, threshold = outcome
                lease.size += added
                lease.last_added = added
                lease.threshold = threshold
                lease.confirmed_until = max(lease.confirmed_until, sent + self.policy.confirm)
                lease.extended = loop.time()

        future.add_done_callback(grown)
        lease.growing = future
        await asyncio.shield(future)  # raises the refusal (insufficient credits, key limit, disabled)

    async def _confirm(self) -> None:
        """Read every lease's state from the store (one read shared by all who wait for it)."""
        if self._confirming is None:
            self._confirm_ahead()
        assert self._confirming is not None
        await asyncio.shield(self._confirming)

    def _confirm_ahead(self) -> None:
        self._confirming = asyncio.ensure_future(self._read_all())
        self._confirming.add_done_callback(_consume)

    async def _read_all(self) -> None:
        loop = asyncio.get_running_loop()
        sent = loop.time()
        leases = [lease for lease in self._leases.values() if lease.size]
        try:
            states = await self._read_states([lease.id for lease in leases])
        except Exception as failure:  # the request that waits fails like one whose grow failed
            raise InternalError(f"The billing store is unavailable: {failure!r}") from failure
        finally:
            self._confirming = None
        for lease in leases:
            state = states.get(lease.id)
            if (
                state is None
                or not state.held
                or state.disabled
                or (lease.threshold is not _UNKNOWN and state.threshold != lease.threshold)
            ):
                self._lose(lease)  # revoked: a new lease is taken under the store's rules of now
            else:
                lease.threshold = state.threshold
                lease.confirmed_until = sent + self.policy.confirm

    def _lose(self, lease: _Lease) -> asyncio.Future[Any] | None:
        """No new request uses the lease; it closes (giving back what it holds) once none is open.
        Returns the close's future when it is queued now."""
        if lease.lost:
            return None
        lease.lost = True
        if self._leases.get((lease.account_id, lease.key_id)) is lease:
            del self._leases[(lease.account_id, lease.key_id)]
        if lease.open:
            self._draining.add(lease)
            return None
        return self._submit(LeaseReturn(lease.id, lease.account_id, lease.key_id, self._ttl, close=True))

    def give_back_idle(self, account_id: int) -> list[asyncio.Future[Any]]:
        """Close this process's leases of the account that no request uses now (before the
        account is deleted: what they hold is no request's)."""
        idle = [
            lease
            for lease in list(self._leases.values())
            if lease.account_id == account_id and not lease.open and lease.growing is None
        ]
        return [future for lease in idle if (future := self._lose(lease)) is not None]

    # -- settling -----------------------------------------------------------------------------------

    def owns(self, request_id: str) -> bool:
        return request_id in self._open

    def charge(self, settlement: Settlement) -> tuple[LeaseCharge, Callable[[asyncio.Future[Any]], None]]:
        """The request's charge against its lease, counted in memory now, and what to run on its
        commit's outcome (the writer queues the one and hooks the other to it)."""
        hold = settlement.hold
        lease = self._open.pop(hold.request_id)
        lease.used -= hold.credits
        lease.open -= 1
        lease.last_active = asyncio.get_running_loop().time()
        expected = lease_charge(settlement)
        lease.size -= expected  # counted as charged now: memory never counts more than the store holds
        close = lease.lost and not lease.open
        if close:
            self._draining.discard(lease)

        def charged(done: asyncio.Future[Any]) -> None:
            if done.cancelled() or done.exception() is not None or lease.lost:
                return
            lease.size += expected - int(done.result())  # the store charged less (capped): usable again

        return LeaseCharge(lease.id, settlement, self._ttl, close), charged

    # -- upkeep -------------------------------------------------------------------------------------

    def tend(self) -> None:
        """Give back leases idle for ``idle`` seconds; extend the others' expiry every ``ttl / 3``."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for lease in list(self._leases.values()):
            if lease.growing is not None:
                continue
            if not lease.open and now - lease.last_active >= self.policy.idle:
                self._lose(lease)
            elif now - lease.extended >= self.policy.ttl / 3:
                lease.extended = now
                extended = self._submit(LeaseReturn(lease.id, lease.account_id, lease.key_id, self._ttl))
                extended.add_done_callback(functools.partial(self._extended, lease))
        for lease in list(self._draining):  # lost, but their requests still run: keep them alive
            if now - lease.extended >= self.policy.ttl / 3:
                lease.extended = now
                self._submit(LeaseReturn(lease.id, lease.account_id, lease.key_id, self._ttl))

    def _extended(self, lease: _Lease, done: asyncio.Future[Any]) -> None:
        if not done.cancelled() and done.exception() is None and done.result() is False:
            log.warning("credit lease %s expired under its live holder; taking a new one", lease.id)
            self._lose(lease)

    def closing(self) -> list[LeaseReturn]:
        """At stop (after every queued settlement is written): close every lease, open or not."""
        leases = [*self._leases.values(), *self._draining]
        self._leases.clear()
        self._draining.clear()
        for lease in leases:
            lease.lost = True
        return [LeaseReturn(lease.id, lease.account_id, lease.key_id, self._ttl, close=True) for lease in leases]


def _consume(future: asyncio.Future[Any]) -> None:
    # A confirmation nobody waited for fails quietly: the next reservation tries again.
    if not future.cancelled():
        future.exception()


async def tend_forever(book: LeaseBook, every: float = 1.0) -> None:
    while True:
        await asyncio.sleep(every)
        with contextlib.suppress(GatewrightError):
            book.tend()
