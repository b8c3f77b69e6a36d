"""Credits: reserve before work, settle once after, every balance change a ledger row.

All writes go through one writer task that applies whatever has queued up in a single
transaction (group commit): under load hundreds of reservations and settlements share one commit,
and each caller still waits for its own outcome. Inside a transaction the rows involved are locked
(``FOR UPDATE`` on PostgreSQL, the database write lock on SQLite), so decisions made on the values
read are safe against other writers and other gateway replicas.

Guarantees, each tested: a request is settled at most once (holds change state from ``held``
exactly once); the balance never goes below zero (a charge is capped by what is left); failed and
refused requests cost nothing; holds whose process died are released, not billed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gatewright.core.billing import credits_to_usd
from gatewright.core.clock import aware, month_start, period_start, utcnow
from gatewright.core.errors import GatewrightError, InsufficientCredits, InternalError
from gatewright.core.platform import Hold, Principal, SettleStatus
from gatewright.core.types import Cost, Usage
from gatewright.store.tables import accounts, api_keys, holds, ledger, usage_records

log = logging.getLogger("gatewright.ledger")


@dataclass(slots=True)
class _Reserve:
    principal: Principal
    credits: int
    request_id: str
    model: str
    future: asyncio.Future[Any]


@dataclass(slots=True)
class _Settle:
    hold: Hold
    usage: Usage
    cost: Cost
    status: SettleStatus
    model: str
    future: asyncio.Future[Any]


@dataclass(slots=True)
class _Account:
    balance: int
    reserved: int
    touched: bool = False


@dataclass(slots=True)
class _Key:
    retention: str | None
    threshold: int | None
    period_start: datetime | None
    period_spent: int
    period_reserved: int
    month_start: datetime | None
    month_spent: int
    touched: bool = False

    def roll(self, now: datetime) -> None:
        start = period_start(self.retention, now)
        current = aware(self.period_start)
        if current is None or current < start:
            self.period_start, self.period_spent, self.touched = start, 0, True
        month = month_start(now)
        current_month = aware(self.month_start)
        if current_month is None or current_month < month:
            self.month_start, self.month_spent, self.touched = month, 0, True


@dataclass
class _Batch:
    """Rows one group commit writes, collected while deciding each operation in order."""

    now: datetime
    new_holds: list[dict[str, Any]] = field(default_factory=list)
    closed_holds: list[dict[str, Any]] = field(default_factory=list)
    ledger_rows: list[dict[str, Any]] = field(default_factory=list)
    usage_rows: list[dict[str, Any]] = field(default_factory=list)


class SqlLedger:
    def __init__(self, engine: AsyncEngine, owner: str, max_batch: int = 512) -> None:
        self.engine = engine
        self.owner = owner
        self.max_batch = max_batch
        self._lock_rows = engine.dialect.name == "postgresql"
        self._queue: asyncio.Queue[_Reserve | _Settle | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ledger-writer")

    async def close(self) -> None:
        if self._task is not None:
            self._queue.put_nowait(None)
            await self._task
            self._task = None

    # -- the Ledger protocol ------------------------------------------------------------------

    async def reserve(self, principal: Principal, credits: int, request_id: str, model: str) -> Hold:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Reserve(principal, credits, request_id, model, future))
        try:
            return await asyncio.shield(future)  # type: ignore[no-any-return]
        except asyncio.CancelledError:
            # The caller left while the hold was being written: release it once it exists.
            future.add_done_callback(self._release_orphan)
            raise

    def _release_orphan(self, future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is None:
            self.settle(future.result(), Usage(), Cost(0, 0.0), "aborted", future.result().model)

    def settle(self, hold: Hold, usage: Usage, cost: Cost, status: SettleStatus, model: str) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Settle(hold, usage, cost, status, model, future))
        return future

    # -- the writer ------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            op = await self._queue.get()
            if op is None:
                return
            batch: list[_Reserve | _Settle] = [op]
            stop = False
            while len(batch) < self.max_batch and not self._queue.empty():
                more = self._queue.get_nowait()
                if more is None:
                    stop = True
                    break
                batch.append(more)
            await self._commit(batch)
            if stop:
                return

    async def _commit(self, batch: list[_Reserve | _Settle]) -> None:
        try:
            async with self.engine.begin() as conn:
                outcomes = await self._apply(conn, batch)
        except Exception as error:  # the transaction rolled back: nothing of the batch happened
            log.exception("ledger commit of %d operations failed", len(batch))
            for op in batch:
                if not op.future.done():
                    op.future.set_exception(InternalError(f"billing store unavailable: {error!r}"))
            return
        for op, outcome in zip(batch, outcomes, strict=True):
            if op.future.done():
                continue
            if isinstance(outcome, GatewrightError):
                op.future.set_exception(outcome)
            else:
                op.future.set_result(outcome)

    async def _load(
        self, conn: AsyncConnection, batch: Sequence[_Reserve | _Settle]
    ) -> tuple[dict[int, _Account], dict[int, _Key], dict[str, dict[str, Any]]]:
        account_ids: set[int] = set()
        key_ids: set[int] = set()
        request_ids: list[str] = []
        for op in batch:
            if isinstance(op, _Reserve):
                account_ids.add(op.principal.account_id)
                key_ids.add(op.principal.key_id)
            else:
                account_ids.add(op.hold.account_id)
                key_ids.add(op.hold.key_id)
                request_ids.append(op.hold.request_id)
        q_accounts = select(accounts.c.id, accounts.c.balance, accounts.c.reserved).where(
            accounts.c.id.in_(account_ids)
        )
        k = api_keys.c
        q_keys = select(
            k.id,
            k.limit_retention,
            k.limit_threshold,
            k.period_start,
            k.period_spent,
            k.period_reserved,
            k.month_start,
            k.month_spent,
        ).where(k.id.in_(key_ids))
        if self._lock_rows:
            q_accounts = q_accounts.with_for_update()
            q_keys = q_keys.with_for_update()
        account_rows = {r.id: _Account(r.balance, r.reserved) for r in await conn.execute(q_accounts)}
        key_rows = {
            r.id: _Key(
                r.limit_retention,
                r.limit_threshold,
                r.period_start,
                r.period_spent,
                r.period_reserved,
                r.month_start,
                r.month_spent,
            )
            for r in await conn.execute(q_keys)
        }
        hold_rows: dict[str, dict[str, Any]] = {}
        if request_ids:
            q_holds = select(holds).where(holds.c.request_id.in_(request_ids))
            if self._lock_rows:
                q_holds = q_holds.with_for_update()
            hold_rows = {r.request_id: dict(r._mapping) for r in await conn.execute(q_holds)}
        return account_rows, key_rows, hold_rows

    async def _apply(self, conn: AsyncConnection, batch: Sequence[_Reserve | _Settle]) -> list[Any]:
        account_rows, key_rows, hold_rows = await self._load(conn, batch)
        rows = _Batch(now=utcnow())
        outcomes: list[Any] = []
        for op in batch:
            if isinstance(op, _Reserve):
                outcomes.append(self._decide_reserve(op, account_rows, key_rows, hold_rows, rows))
            else:
                outcomes.append(_decide_settle(op, account_rows, key_rows, hold_rows, rows))
        await _write(conn, account_rows, key_rows, rows)
        return outcomes

    def _decide_reserve(
        self,
        op: _Reserve,
        account_rows: dict[int, _Account],
        key_rows: dict[int, _Key],
        hold_rows: dict[str, dict[str, Any]],
        rows: _Batch,
    ) -> Hold | GatewrightError:
        account = account_rows.get(op.principal.account_id)
        key = key_rows.get(op.principal.key_id)
        if account is None or key is None:
            return InsufficientCredits("This API key's account no longer exists.", code="account_missing")
        key.roll(rows.now)
        available = account.balance - account.reserved
        if op.credits > available:
            return InsufficientCredits(
                f"Insufficient credits: this request may cost up to {op.credits} credits "
                f"({credits_to_usd(op.credits):.6f} USD) and the account has {max(available, 0)} available. "
                "Add credits, or lower max_tokens.",
                code="insufficient_credits",
            )
        if key.threshold is not None and key.period_spent + key.period_reserved + op.credits > key.threshold:
            left = max(key.threshold - key.period_spent - key.period_reserved, 0)
            return InsufficientCredits(
                f"This API key's spending limit of {credits_to_usd(key.threshold):.2f} USD per "
                f"{key.retention or 'period'} leaves {credits_to_usd(left):.6f} USD; this request may cost "
                f"up to {credits_to_usd(op.credits):.6f} USD.",
                code="key_limit_exceeded",
            )
        account.reserved += op.credits
        account.touched = True
        key.period_reserved += op.credits
        key.touched = True
        row = {
            "request_id": op.request_id,
            "account_id": op.principal.account_id,
            "key_id": op.principal.key_id,
            "credits": op.credits,
            "model": op.model,
            "status": "held",
            "owner": self.owner,
            "created_at": rows.now,
        }
        rows.new_holds.append(row)
        hold_rows[op.request_id] = row
        return Hold(
            op.request_id, op.principal.account_id, op.principal.key_id, op.principal.prefix, op.credits, op.model
        )


def _decide_settle(
    op: _Settle,
    account_rows: dict[int, _Account],
    key_rows: dict[int, _Key],
    hold_rows: dict[str, dict[str, Any]],
    rows: _Batch,
) -> int:
    held = hold_rows.get(op.hold.request_id)
    if held is None or held["status"] != "held":
        return 0  # settled, released or never written: nothing more to charge
    account = account_rows[held["account_id"]]
    key = key_rows[held["key_id"]]
    key.roll(rows.now)
    hold_credits = int(held["credits"])
    # Never below zero: an upstream that counted more than estimated is charged what is left.
    spendable = account.balance - (account.reserved - hold_credits)
    charge = max(0, min(op.cost.credits, spendable))
    account.reserved -= hold_credits
    account.balance -= charge
    account.touched = True
    key.period_reserved -= hold_credits
    key.period_spent += charge
    key.month_spent += charge
    key.touched = True
    held["status"] = "settled"
    rows.closed_holds.append({"rid": op.hold.request_id, "new_status": "settled"})
    if charge:
        rows.ledger_rows.append(
            {
                "account_id": held["account_id"],
                "key_id": held["key_id"],
                "request_id": op.hold.request_id,
                "kind": "charge",
                "credits": -charge,
                "balance_after": account.balance,
                "note": op.model,
                "created_at": rows.now,
            }
        )
    usage = op.usage
    rows.usage_rows.append(
        {
            "request_id": op.hold.request_id,
            "account_id": held["account_id"],
            "key_id": held["key_id"],
            "key_prefix": op.hold.key_prefix,
            "model": op.model,
            "input_tokens": usage.input_tokens,
            "cached_tokens": usage.cached_tokens,
            "output_tokens": usage.output_tokens,
            "reasoning_tokens": usage.reasoning_tokens,
            "credits": charge,
            "usd": credits_to_usd(charge),
            "status": op.status,
            "estimated": usage.estimated,
            "created_at": rows.now,
        }
    )
    return charge


async def _write(
    conn: AsyncConnection, account_rows: dict[int, _Account], key_rows: dict[int, _Key], rows: _Batch
) -> None:
    touched_accounts = [
        {"aid": i, "new_balance": a.balance, "new_reserved": a.reserved, "now": rows.now}
        for i, a in account_rows.items()
        if a.touched
    ]
    if touched_accounts:
        await conn.execute(
            update(accounts)
            .where(accounts.c.id == bindparam("aid"))
            .values(balance=bindparam("new_balance"), reserved=bindparam("new_reserved"), updated_at=bindparam("now")),
            touched_accounts,
        )
    touched_keys = [
        {
            "kid": i,
            "p_start": k.period_start,
            "p_spent": k.period_spent,
            "p_reserved": k.period_reserved,
            "m_start": k.month_start,
            "m_spent": k.month_spent,
        }
        for i, k in key_rows.items()
        if k.touched
    ]
    if touched_keys:
        await conn.execute(
            update(api_keys)
            .where(api_keys.c.id == bindparam("kid"))
            .values(
                period_start=bindparam("p_start"),
                period_spent=bindparam("p_spent"),
                period_reserved=bindparam("p_reserved"),
                month_start=bindparam("m_start"),
                month_spent=bindparam("m_spent"),
            ),
            touched_keys,
        )
    if rows.new_holds:
        await conn.execute(insert(holds), rows.new_holds)
    if rows.closed_holds:
        await conn.execute(
            update(holds).where(holds.c.request_id == bindparam("rid")).values(status=bindparam("new_status")),
            rows.closed_holds,
        )
    if rows.ledger_rows:
        await conn.execute(insert(ledger), rows.ledger_rows)
    if rows.usage_rows:
        await conn.execute(insert(usage_records), rows.usage_rows)


async def release_stale_holds(engine: AsyncEngine, older_than: timedelta | None) -> int:
    """Release holds of requests that can no longer finish (their process is gone).

    ``older_than=None`` releases every open hold: right for a single-node store at start-up.
    Replicas sharing PostgreSQL release only holds older than the longest possible request.
    Released holds are not billed: the tokens their requests produced are unknown.
    """
    cutoff = utcnow() - older_than if older_than is not None else None
    async with engine.begin() as conn:
        query = select(holds).where(holds.c.status == "held")
        if cutoff is not None:
            query = query.where(holds.c.created_at < cutoff)
        if engine.dialect.name == "postgresql":
            query = query.with_for_update()
        stale = [dict(r._mapping) for r in await conn.execute(query)]
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
