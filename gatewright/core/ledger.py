"""Credits: reserve before work, settle once after, every balance change a ledger row.

All writes go through one writer task that applies whatever has queued up in a single
transaction (group commit): under load hundreds of reservations and settlements share one commit,
and each caller still waits for its own outcome. Inside a transaction the rows involved are locked
(``FOR UPDATE`` in id order on PostgreSQL, the database write lock on SQLite), so decisions made on
the values read are safe against other writers and other gateway replicas. The decisions
themselves are pure functions in ``core.ledger_rules``. On SQLite a whole batch runs in one
worker thread on a blocking connection (one thread hop per commit instead of one per statement);
on PostgreSQL it runs on the async driver.

A batch that fails (a deadlock between replicas, a dropped connection) is tried again; both kinds
of operation are idempotent per request id, so a retry after a commit whose answer was lost
changes nothing twice. Settlements that still cannot be written are retried in the background
until they are, because a settlement must never be lost.

Guarantees, each tested: a request is settled at most once (holds change state from ``held``
exactly once); the balance never goes below zero (a charge is capped by what is left); failed and
refused requests cost nothing; holds whose process died are released, not billed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, column, func, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from gatewright.core.clock import utcnow
from gatewright.core.errors import GatewrightError, InternalError
from gatewright.core.ledger_rules import (
    AccountRow,
    Changes,
    KeyRow,
    Locked,
    Reservation,
    Settlement,
    decide_reserve,
    decide_settle,
)
from gatewright.core.metrics import record_ledger_commit
from gatewright.core.platform import Hold, Principal, SettleStatus
from gatewright.core.types import Cost, Usage
from gatewright.store import sqlite_raw
from gatewright.store.db import WalCheckpointer, create_blocking_twin
from gatewright.store.tables import accounts, api_keys, holds, ledger, usage_records

log = logging.getLogger("gatewright.ledger")

# Pauses before trying a failed batch again; after the last, reservations fail and settlements
# are tried again in the background every BACKGROUND_RETRY seconds until they are written.
RETRY_DELAYS = (0.05, 0.25, 1.0)
BACKGROUND_RETRY = 5.0
# How long settlements wait for a reservation to share their commit (see SqlLedger._linger).
SETTLEMENT_LINGER = 0.005


class _Barrier:
    """Resolves once everything queued before it is written (``SqlLedger.flush``)."""


Work = Reservation | Settlement | _Barrier


@dataclass(slots=True)
class _Op:
    work: Work
    future: asyncio.Future[Any]


def _consume(future: asyncio.Future[Any]) -> None:
    # Failures are logged by the writer; a caller that did not wait must not trigger
    # "exception was never retrieved".
    if not future.cancelled():
        future.exception()


class SqlLedger:
    def __init__(
        self,
        engine: AsyncEngine,
        owner: str,
        max_batch: int = 512,
        retry_delays: tuple[float, ...] = RETRY_DELAYS,
        background_retry: float = BACKGROUND_RETRY,
        linger: float = SETTLEMENT_LINGER,
    ) -> None:
        self.engine = engine
        self.owner = owner
        self.max_batch = max_batch
        self.retry_delays = retry_delays
        self.background_retry = background_retry
        self.linger = linger
        self._lock_rows = engine.dialect.name == "postgresql"
        # Commits on SQLite leave the WAL checkpoint to a thread of its own (see WalCheckpointer).
        self._blocking = create_blocking_twin(engine, autocheckpoint=False)
        self._checkpointer = WalCheckpointer.for_engine(engine) if self._blocking is not None else None
        self._thread = ThreadPoolExecutor(1, "ledger") if self._blocking is not None else None
        self._queue: asyncio.Queue[_Op | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._retrying: dict[asyncio.TimerHandle, Callable[[], None]] = {}
        # Request ids of holds this process made and has not yet settled (see wait_settled).
        self._unsettled: set[str] = set()
        self._settled_one = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ledger-writer")
        if self._checkpointer is not None:
            self._checkpointer.start()

    async def close(self) -> None:
        """Write everything queued, then stop."""
        for handle, again in list(self._retrying.items()):  # waiting settlements get one last try
            handle.cancel()
            again()
        if self._task is not None:
            self._queue.put_nowait(None)
            await self._task
            self._task = None
        if self._thread is not None and self._blocking is not None:
            self._thread.shutdown()
            self._blocking.dispose()
        if self._checkpointer is not None:
            await asyncio.to_thread(self._checkpointer.stop)

    @property
    def sql_engine(self) -> Engine:
        """The engine whose connections run the ledger's statements (for events and tests)."""
        return self._blocking if self._blocking is not None else self.engine.sync_engine

    async def flush(self) -> None:
        """Wait until everything queued so far is written: reads after it see every settlement
        this process has started (the billing API reads the balance this way)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Op(_Barrier(), future))
        with contextlib.suppress(GatewrightError):  # a failed batch: read what is there
            await future

    # -- the Ledger protocol ------------------------------------------------------------------

    async def reserve(self, principal: Principal, credits: int, request_id: str, model: str) -> Hold:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Op(Reservation(principal, credits, request_id, model), future))
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
            self.settle(hold, Usage(), Cost(0, 0.0), "aborted", hold.model)

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

    def settle(self, hold: Hold, usage: Usage, cost: Cost, status: SettleStatus, model: str) -> asyncio.Future[Any]:
        self._unsettled.discard(hold.request_id)
        self._settled_one.set()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_consume)
        self._queue.put_nowait(_Op(Settlement(hold, usage, cost, status, model), future))
        return future

    # -- the writer ------------------------------------------------------------------------------

    async def _run(self) -> None:
        stop = False
        while not stop:
            op = await self._queue.get()
            if op is None:
                return
            batch: list[_Op] = [op]
            stop = self._drain(batch)
            if not stop and not any(isinstance(o.work, Reservation | _Barrier) for o in batch):
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

    async def _linger(self, batch: list[_Op]) -> bool:
        """Settlements alone wait a moment for company: nobody waits on them, while the next
        reservation does, and sharing one commit with it halves the writer's work per request."""
        deadline = asyncio.get_running_loop().time() + self.linger
        while len(batch) < self.max_batch:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return False
            try:
                more = await asyncio.wait_for(self._queue.get(), left)
            except TimeoutError:
                return False
            if more is None:
                return True
            batch.append(more)
            if isinstance(more.work, Reservation | _Barrier):
                return self._drain(batch)
        return False

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
                if op.future.done():
                    continue
                if isinstance(outcome, GatewrightError):
                    op.future.set_exception(outcome)
                else:
                    op.future.set_result(outcome)
            return
        log.error("ledger commit of %d operations failed for good: %r", len(batch), error)
        for op in batch:
            if isinstance(op.work, Settlement):
                self._retry_later(op.work)
            if not op.future.done():
                op.future.set_exception(InternalError(f"The billing store is unavailable: {error!r}"))

    def _retry_later(self, work: Settlement) -> None:
        loop = asyncio.get_running_loop()

        def again() -> None:
            self._retrying.pop(handle, None)
            future = loop.create_future()
            future.add_done_callback(_consume)
            self._queue.put_nowait(_Op(work, future))

        handle = loop.call_later(self.background_retry, again)
        self._retrying[handle] = again

    async def _transaction(self, batch: list[Work], retry: bool) -> list[Any]:
        if all(isinstance(work, _Barrier) for work in batch):
            return [None] * len(batch)  # nothing to write: everything before them is committed
        began = time.perf_counter()
        if self._blocking is not None and self._thread is not None:
            loop = asyncio.get_running_loop()
            outcomes = await loop.run_in_executor(self._thread, self._blocking_transaction, batch, retry)
        else:
            async with self.engine.begin() as conn:
                outcomes = await conn.run_sync(apply_batch, batch, self.owner, self._lock_rows, retry)
        record_ledger_commit(time.perf_counter() - began)
        return outcomes

    def _blocking_transaction(self, batch: list[Work], retry: bool) -> list[Any]:
        assert self._blocking is not None
        with self._blocking.begin() as conn:
            return apply_batch(conn, batch, self.owner, self._lock_rows, retry)


def apply_batch(conn: Connection, batch: Sequence[Work], owner: str, lock_rows: bool, retry: bool = False) -> list[Any]:
    """One group commit: lock the rows involved, decide every operation in order, write.

    ``retry``: an earlier attempt may have committed without our knowing, so look for holds the
    batch's reservations may already have (fresh request ids have none: skip the query)."""
    locked = _load(conn, batch, lock_rows, retry)
    changes = Changes(now=utcnow(), owner=owner)
    outcomes: list[Any] = []
    for work in batch:
        if isinstance(work, Reservation):
            outcomes.append(decide_reserve(work, locked, changes))
        elif isinstance(work, Settlement):
            outcomes.append(decide_settle(work, locked, changes))
        else:
            outcomes.append(None)
    _write(conn, locked, changes)
    return outcomes


# Statements are built once: constructing SQLAlchemy statements per batch cost more than running them.
_a, _k, _h = accounts.c, api_keys.c, holds.c
_SELECT_ACCOUNTS = (
    select(_a.id, _a.balance, _a.reserved).where(_a.id.in_(bindparam("ids", expanding=True))).order_by(_a.id)
)
_SELECT_KEYS = (
    select(
        _k.id,
        _k.limit_retention,
        _k.limit_threshold,
        _k.period_start,
        _k.period_spent,
        _k.period_reserved,
        _k.month_start,
        _k.month_spent,
    )
    .where(_k.id.in_(bindparam("ids", expanding=True)))
    .order_by(_k.id)
)
_SELECT_HOLDS = (
    select(_h.request_id, _h.account_id, _h.key_id, _h.credits, _h.model, _h.status)
    .where(_h.request_id.in_(bindparam("ids", expanding=True)))
    .order_by(_h.request_id)
)
# Rows are locked in one global order (accounts, keys, holds; each by id) so replicas committing
# overlapping batches queue behind each other instead of deadlocking.
_LOCKING = {
    False: (_SELECT_ACCOUNTS, _SELECT_KEYS, _SELECT_HOLDS),
    True: (_SELECT_ACCOUNTS.with_for_update(), _SELECT_KEYS.with_for_update(), _SELECT_HOLDS.with_for_update()),
}
# SQLite takes the batch's ids as one JSON array: one SQL text, whatever the batch's size.
_json_ids = select(column("value")).select_from(func.json_each(bindparam("ids"))).scalar_subquery()
_SQLITE_SELECTS = tuple(
    select(*query.selected_columns).where(table_id.in_(_json_ids)).order_by(table_id)
    for query, table_id in ((_SELECT_ACCOUNTS, _a.id), (_SELECT_KEYS, _k.id), (_SELECT_HOLDS, _h.request_id))
)
_UPDATE_ACCOUNT = (
    update(accounts)
    .where(_a.id == bindparam("aid"))
    .values(balance=bindparam("new_balance"), reserved=bindparam("new_reserved"), updated_at=bindparam("now"))
)
_UPDATE_KEY = (
    update(api_keys)
    .where(_k.id == bindparam("kid"))
    .values(
        period_start=bindparam("p_start"),
        period_spent=bindparam("p_spent"),
        period_reserved=bindparam("p_reserved"),
        month_start=bindparam("m_start"),
        month_spent=bindparam("m_spent"),
    )
)
_INSERT_HOLDS = insert(holds)
_CLOSE_HOLDS = update(holds).where(_h.request_id == bindparam("rid")).values(status=bindparam("new_status"))
_INSERT_LEDGER = insert(ledger)
_INSERT_USAGE = insert(usage_records)


def _load(conn: Connection, batch: Sequence[Work], lock_rows: bool, retry: bool) -> Locked:
    account_ids: set[int] = set()
    key_ids: set[int] = set()
    request_ids: list[str] = []
    for work in batch:
        if isinstance(work, Reservation):
            account_ids.add(work.principal.account_id)
            key_ids.add(work.principal.key_id)
            if retry:
                request_ids.append(work.request_id)
        elif isinstance(work, Settlement):
            account_ids.add(work.hold.account_id)
            key_ids.add(work.hold.key_id)
            request_ids.append(work.hold.request_id)
    if not account_ids:
        return Locked({}, {}, {})
    if sqlite_raw.serves(conn):
        return _load_sqlite(conn, account_ids, key_ids, request_ids)
    q_accounts, q_keys, q_holds = _LOCKING[lock_rows]
    account_rows = {r.id: AccountRow(r.balance, r.reserved) for r in conn.execute(q_accounts, {"ids": account_ids})}
    key_rows = {
        r.id: KeyRow(
            r.limit_retention,
            r.limit_threshold,
            r.period_start,
            r.period_spent,
            r.period_reserved,
            r.month_start,
            r.month_spent,
        )
        for r in conn.execute(q_keys, {"ids": key_ids})
    }
    hold_rows: dict[str, dict[str, Any]] = {}
    if request_ids:
        hold_rows = {r.request_id: dict(r._mapping) for r in conn.execute(q_holds, {"ids": request_ids})}
    return Locked(account_rows, key_rows, hold_rows)


def _load_sqlite(conn: Connection, account_ids: set[int], key_ids: set[int], request_ids: list[str]) -> Locked:
    """``_load`` on the raw driver (see ``store.sqlite_raw``); the batch's ids go in as one JSON array."""
    fetch, stamp = sqlite_raw.fetch, sqlite_raw.to_datetime
    account_rows = {
        aid: AccountRow(balance, reserved)
        for aid, balance, reserved in fetch(conn, _SQLITE_SELECTS[0], {"ids": json.dumps(list(account_ids))})
    }
    key_rows = {
        kid: KeyRow(retention, threshold, stamp(p_start), p_spent, p_reserved, stamp(m_start), m_spent)
        for kid, retention, threshold, p_start, p_spent, p_reserved, m_start, m_spent in fetch(
            conn, _SQLITE_SELECTS[1], {"ids": json.dumps(list(key_ids))}
        )
    }
    hold_rows: dict[str, dict[str, Any]] = {}
    if request_ids:
        names = [c.name for c in _SELECT_HOLDS.selected_columns]
        rows = fetch(conn, _SQLITE_SELECTS[2], {"ids": json.dumps(request_ids)})
        hold_rows = {row[0]: dict(zip(names, row, strict=True)) for row in rows}
    return Locked(account_rows, key_rows, hold_rows)


def _execute(conn: Connection, statement: Any, rows: list[dict[str, Any]]) -> None:
    if sqlite_raw.serves(conn):
        sqlite_raw.execute_many(conn, statement, rows)
    else:
        conn.execute(statement, rows)


def _write(conn: Connection, locked: Locked, changes: Changes) -> None:
    touched_accounts = [
        {"aid": i, "new_balance": a.balance, "new_reserved": a.reserved, "now": changes.now}
        for i, a in locked.accounts.items()
        if a.touched
    ]
    if touched_accounts:
        _execute(conn, _UPDATE_ACCOUNT, touched_accounts)
    touched_keys = [
        {
            "kid": i,
            "p_start": k.period_start,
            "p_spent": k.period_spent,
            "p_reserved": k.period_reserved,
            "m_start": k.month_start,
            "m_spent": k.month_spent,
        }
        for i, k in locked.keys.items()
        if k.touched
    ]
    if touched_keys:
        _execute(conn, _UPDATE_KEY, touched_keys)
    if changes.new_holds:
        _execute(conn, _INSERT_HOLDS, changes.new_holds)
    if changes.closed_holds:
        _execute(conn, _CLOSE_HOLDS, changes.closed_holds)
    if changes.ledger_rows:
        _execute(conn, _INSERT_LEDGER, changes.ledger_rows)
    if changes.usage_rows:
        _execute(conn, _INSERT_USAGE, changes.usage_rows)


async def release_stale_holds(engine: AsyncEngine, older_than: timedelta | None) -> int:
    """Release holds of requests that can no longer finish (their process is gone).

    ``older_than=None`` releases every open hold: right for a single-node store at start-up.
    Replicas sharing PostgreSQL release only holds older than the longest possible request.
    Released holds are not billed: the tokens their requests produced are unknown.
    """
    cutoff = utcnow() - older_than if older_than is not None else None
    lock = engine.dialect.name == "postgresql"
    async with engine.begin() as conn:
        query = select(holds.c.request_id, holds.c.account_id, holds.c.key_id).where(holds.c.status == "held")
        if cutoff is not None:
            query = query.where(holds.c.created_at < cutoff)
        candidates = list(await conn.execute(query))
        if not candidates:
            return 0
        if lock:  # the writer's lock order: accounts, keys, holds
            ids = {r.account_id for r in candidates}
            await conn.execute(
                select(accounts.c.id).where(accounts.c.id.in_(ids)).order_by(accounts.c.id).with_for_update()
            )
            ids = {r.key_id for r in candidates}
            await conn.execute(
                select(api_keys.c.id).where(api_keys.c.id.in_(ids)).order_by(api_keys.c.id).with_for_update()
            )
        recheck = (
            select(holds)
            .where(holds.c.request_id.in_([r.request_id for r in candidates]), holds.c.status == "held")
            .order_by(holds.c.request_id)
        )
        stale = [dict(r._mapping) for r in await conn.execute(recheck.with_for_update() if lock else recheck)]
        now = utcnow()
        for row in stale:
            await conn.execute(
                update(accounts)
                .where(accounts.c.id == row["account_id"])
                .values(reserved=accounts.c.reserved - row["credits"], updated_at=now)
            )
            await conn.execute(
                update(api_keys)
                .where(api_keys.c.id == row["key_id"])
                .values(period_reserved=api_keys.c.period_reserved - row["credits"])
            )
            await conn.execute(update(holds).where(holds.c.request_id == row["request_id"]).values(status="released"))
    if stale:
        log.warning("released %d holds of requests interrupted by a restart (not billed)", len(stale))
    return len(stale)
