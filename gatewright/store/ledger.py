"""The ledger's one writer in SQL: load and lock the rows a batch involves, let
``core.ledger_rules`` decide every operation in order, write what changed, in one transaction.

Every write of ``accounts.balance``/``reserved`` in gatewright is made by ``apply_batch``.

The driver is chosen here, not by the caller: on a SQLite file a whole batch runs as one
transaction on a blocking connection, on the raw ``sqlite3`` cursor (``store.sqlite_raw``:
SQLAlchemy spent more CPU per statement than SQLite); on PostgreSQL it runs on the async driver with
rows locked ``FOR UPDATE``.

On SQLite a batch is first tried on the event loop's own thread, without waiting for the file's
write lock: a commit in WAL mode with ``synchronous=NORMAL`` is CPU work and writes to the page
cache (no sync; the checkpoint has a thread of its own), about 11 µs a settlement
(``bench.ledger_rows``). Handing it to a worker thread cost more than the work: each ``sqlite3``
call gives up the GIL, and on a busy gateway every give-up is a hand-over between the two threads
(docs/benchmarks.md, "Commits on the event loop's thread"). When another writer holds the lock
(another worker process, the checkpoint's RESTART, a CLI grant) the batch goes to the worker
thread, which waits for it there, not on the loop; so do the rare batches written with
SQLAlchemy's statements.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, bindparam, column, func, insert, select, update
from sqlalchemy.dialects import postgresql as postgresql_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from gatewright.core.clock import utcnow
from gatewright.core.ledger_leases import LeaseState
from gatewright.core.ledger_rules import (
    AccountRow,
    Changes,
    CodeRow,
    HoldRow,
    Involved,
    KeyRow,
    LeaseExpiry,
    LeaseRow,
    Locked,
    Operation,
    Release,
    decide_batch,
    involved,
)
from gatewright.store import sqlite_raw
from gatewright.store.db import BUSY_TIMEOUT_S, WalCheckpointer, create_blocking_twin
from gatewright.store.tables import (
    accounts,
    api_keys,
    holds,
    leases,
    ledger,
    redemption_codes,
    usage_days,
    usage_records,
)

log = logging.getLogger("gatewright.ledger")


# SQLite's primary result codes for a lock held by another connection (extended codes keep them
# in the low byte): SQLITE_BUSY, SQLITE_LOCKED.
_LOCK_CODES = (5, 6)


def _lock_taken(error: BaseException) -> bool:
    """Whether ``error`` (the driver's, or SQLAlchemy's wrapping it) says another connection holds
    the lock: nothing was written, and the batch may go to the thread to wait for it."""
    cause = getattr(error, "orig", error)
    code = getattr(cause, "sqlite_errorcode", None)
    return isinstance(cause, sqlite3.OperationalError) and code is not None and code & 0xFF in _LOCK_CODES


class SqlLedgerStore:
    """``core.ledger.LedgerStore`` on SQLAlchemy; ``owner`` names this process on the holds it writes."""

    def __init__(self, engine: AsyncEngine, owner: str) -> None:
        self.engine = engine
        self.owner = owner
        self._lock_rows = engine.dialect.name == "postgresql"
        # Commits on SQLite leave the WAL checkpoint to a thread of its own (see WalCheckpointer).
        self._blocking = create_blocking_twin(engine, autocheckpoint=False)
        self._checkpointer = WalCheckpointer.for_engine(engine) if self._blocking is not None else None
        self._thread = ThreadPoolExecutor(1, "ledger") if self._blocking is not None else None
        self._started = False
        self._conn: Connection | None = None  # the one connection of the raw path, on SQLite
        self._waits_for_lock: bool | None = None  # its busy timeout now: 30 s (True) or none (False)
        self._queued = 0  # batches handed to the thread and not finished: the loop leaves the connection to it
        self.commits = 0  # transactions committed (for tests)
        self.commits_on_loop = 0  # of them, on the event loop's thread (for tests)

    def start(self) -> None:
        if self._checkpointer is not None and not self._started:
            self._checkpointer.start()
        self._started = True

    async def close(self) -> None:
        if self._thread is not None and self._blocking is not None:
            self._thread.shutdown()
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._blocking.dispose()
        if self._checkpointer is not None and self._started:
            await asyncio.to_thread(self._checkpointer.stop)

    async def apply(self, batch: Sequence[Operation], retry: bool) -> list[Any]:
        """One transaction: each operation's outcome (see ``ledger_rules.decide_batch``)."""
        if self._blocking is not None and self._thread is not None:
            ids = involved(batch, retry)
            raw_path = not (ids.code_hashes or ids.billed_ids)
            # The loop takes a batch when the connection is open (opening it begins a transaction
            # that waits for the lock) and no batch of ours is on the thread (one user at a time).
            if raw_path and not self._queued and self._conn is not None:
                try:
                    outcomes = self._blocking_transaction(batch, retry, ids, wait=False)
                except Exception as error:
                    if not _lock_taken(error):
                        raise
                else:
                    self.commits_on_loop += 1
                    return outcomes
            # Another writer holds the file, or the connection is to be opened, or a batch of ours
            # is on the thread already: the thread waits for the lock, in order behind what it has.
            self._queued += 1
            try:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(self._thread, self._blocking_transaction, batch, retry, ids, True)
            finally:
                self._queued -= 1
        async with self.engine.begin() as conn:
            outcomes = await conn.run_sync(apply_batch, batch, self.owner, self._lock_rows, retry)
        self.commits += 1
        return outcomes

    def _blocking_transaction(self, batch: Sequence[Operation], retry: bool, ids: Involved, wait: bool) -> list[Any]:
        """``wait``: for the write lock, as long as the connection's busy timeout allows (on the
        worker thread); else a lock held elsewhere fails at once (on the event loop)."""
        assert self._blocking is not None
        if ids.code_hashes or ids.billed_ids:  # rare (redemptions, retries): statements of SQLAlchemy's
            with self._blocking.begin() as conn:
                outcomes = apply_batch(conn, batch, self.owner, self._lock_rows, retry, ids)
            self.commits += 1
            return outcomes
        # Everything else runs on the raw cursor (store.sqlite_raw), so the transaction is the
        # driver's too: one connection kept, BEGIN IMMEDIATE and COMMIT sent straight, without
        # SQLAlchemy's pool checkout, events and reset per commit.
        if self._conn is None:
            self._conn = self._blocking.connect()
            self._conn.exec_driver_sql("SELECT 1")  # connected (and its pragmas set) now
            self._conn.commit()
            self._waits_for_lock = True  # the engine's connect_args: a 30 s busy timeout
        raw = self._conn.connection.driver_connection
        assert raw is not None
        if self._waits_for_lock != wait:  # only when the path changes: the loop's path is the usual one
            raw.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000 if wait else 0}")  # the engine's own, or none
            self._waits_for_lock = wait
        raw.execute("BEGIN IMMEDIATE")
        try:
            outcomes = apply_batch(self._conn, batch, self.owner, self._lock_rows, retry, ids)
            raw.execute("COMMIT")
        except BaseException:
            conn, self._conn = self._conn, None
            try:
                if raw.in_transaction:
                    raw.execute("ROLLBACK")
            finally:
                conn.invalidate()  # whatever state it is in, the next batch takes a new one
            raise
        self.commits += 1
        return outcomes

    async def open_holds(self, older_than: timedelta | None) -> list[Release]:
        """Holds still open (older than ``older_than``, if given), as the releases that would close them."""
        query = select(holds.c.request_id, holds.c.account_id, holds.c.key_id).where(holds.c.status == "held")
        if older_than is not None:
            query = query.where(holds.c.created_at < utcnow() - older_than)
        async with self.engine.connect() as conn:
            rows = list(await conn.execute(query.order_by(holds.c.request_id)))
        return [Release(r.request_id, int(r.account_id), int(r.key_id)) for r in rows]

    async def expired_leases(self, before: datetime | None) -> list[LeaseExpiry]:
        """Leases still held that expired before ``before`` (None: every one), as the expiries that
        would close them (each re-checked under lock: a holder may extend it meanwhile)."""
        return await self._held(None if before is None else leases.c.expires_at < before, before)

    async def held_leases(self, owners: Collection[str]) -> list[LeaseExpiry]:
        """Leases these processes still hold, as expiries that close them now (each re-checked
        under lock: one closed meanwhile gives back nothing twice)."""
        return await self._held(leases.c.owner.in_(list(owners)), None)

    async def _held(self, which: ColumnElement[bool] | None, before: datetime | None) -> list[LeaseExpiry]:
        query = select(leases.c.id, leases.c.account_id, leases.c.key_id).where(leases.c.status == "held")
        if which is not None:
            query = query.where(which)
        async with self.engine.connect() as conn:
            rows = list(await conn.execute(query.order_by(leases.c.id)))
        return [LeaseExpiry(r.id, int(r.account_id), int(r.key_id), before) for r in rows]

    async def lease_states(self, lease_ids: Sequence[str]) -> dict[str, LeaseState]:
        """What a lease's holder must confirm before reserving against it in memory: still held,
        its account not disabled, its key's limit the one it was taken under."""
        if not lease_ids:
            return {}
        query = (
            select(leases.c.id, leases.c.status, accounts.c.disabled, api_keys.c.limit_threshold)
            .join(accounts, accounts.c.id == leases.c.account_id)
            .join(api_keys, api_keys.c.id == leases.c.key_id)
            .where(leases.c.id.in_(list(lease_ids)))
        )
        async with self.engine.connect() as conn:
            rows = list(await conn.execute(query))
        return {r.id: LeaseState(r.status == "held", bool(r.disabled), r.limit_threshold) for r in rows}

    async def charged(self, request_ids: Sequence[str]) -> int:
        """Credits charged to these requests in all (0 when none was charged or written)."""
        if not request_ids:
            return 0
        query = select(func.coalesce(func.sum(usage_records.c.credits), 0)).where(
            usage_records.c.request_id.in_(list(request_ids))
        )
        async with self.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())


def apply_batch(
    conn: Connection,
    batch: Sequence[Operation],
    owner: str,
    lock_rows: bool,
    retry: bool = False,
    ids: Involved | None = None,
) -> list[Any]:
    """One group commit: lock the rows involved, decide every operation in order, write.
    ``ids``: ``ledger_rules.involved(batch, retry)`` when the caller has it already."""
    locked = _load(conn, ids if ids is not None else involved(batch, retry), lock_rows)
    changes = Changes(now=utcnow())
    outcomes = decide_batch(batch, locked, changes)
    _write(conn, locked, changes, owner)
    return outcomes


# Statements are built once: constructing SQLAlchemy statements per batch cost more than running them.
_a, _k, _h, _c, _l = accounts.c, api_keys.c, holds.c, redemption_codes.c, leases.c
_SELECT_ACCOUNTS = (
    select(_a.id, _a.balance, _a.reserved, _a.disabled)
    .where(_a.id.in_(bindparam("ids", expanding=True)))
    .order_by(_a.id)
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
_PLAIN = (_SELECT_ACCOUNTS, _SELECT_KEYS, _SELECT_HOLDS)
_LOCKED = (_SELECT_ACCOUNTS.with_for_update(), _SELECT_KEYS.with_for_update(), _SELECT_HOLDS.with_for_update())
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
        # The key's last use rides on this write (no write of its own); a release leaves it as it was.
        last_used_at=func.coalesce(bindparam("used_at", type_=_k.last_used_at.type), _k.last_used_at),
    )
)
# Redemption codes are rare: read and spent through SQLAlchemy on either driver, locked last.
_SELECT_CODES = (
    select(_c.id, _c.prefix, _c.credits, _c.expires_at, _c.redeemed_at, _c.code_hash)
    .where(_c.code_hash.in_(bindparam("hashes", expanding=True)))
    .order_by(_c.code_hash)
)
# Conditional: a code another transaction spent first is never spent twice (the row lock makes
# this the rule's second guard, not its only one).
_SPEND_CODE = (
    update(redemption_codes)
    .where(_c.id == bindparam("cid"), _c.redeemed_at.is_(None))
    .values(redeemed_at=bindparam("at"), redeemed_by=bindparam("by"))
)
_SELECT_LEASES = (
    select(_l.id, _l.account_id, _l.key_id, _l.credits, _l.status, _l.expires_at)
    .where(_l.id.in_(bindparam("ids", expanding=True)))
    .order_by(_l.id)
)
_SQLITE_LEASES = select(*_SELECT_LEASES.selected_columns).where(_l.id.in_(_json_ids)).order_by(_l.id)
_SELECT_BILLED = select(usage_records.c.request_id, usage_records.c.credits).where(
    usage_records.c.request_id.in_(bindparam("ids", expanding=True))
)
_INSERT_LEASES = insert(leases)
_UPDATE_LEASE = (
    update(leases)
    .where(_l.id == bindparam("lid"))
    .values(credits=bindparam("new_credits"), status=bindparam("new_status"), expires_at=bindparam("new_expires"))
)
_INSERT_HOLDS = insert(holds)
_CLOSE_HOLDS = update(holds).where(_h.request_id == bindparam("rid")).values(status=bindparam("new_status"))
_INSERT_LEDGER = insert(ledger)
_INSERT_USAGE = insert(usage_records)


def _add_to_days(dialect: Any) -> Any:
    """Add a batch's usage to its day's row (an upsert; both dialects spell it the same way)."""
    new = dialect.insert(usage_days)
    return new.on_conflict_do_update(
        index_elements=["account_id", "day", "model", "key_prefix"],
        set_={
            name: getattr(usage_days.c, name) + getattr(new.excluded, name)
            for name in ("requests", "input_tokens", "output_tokens", "credits")
        },
    )


_ADD_DAYS = {"sqlite": _add_to_days(sqlite_dialect), "postgresql": _add_to_days(postgresql_dialect)}


def _load(conn: Connection, ids: Involved, lock_rows: bool) -> Locked:
    if not ids.account_ids:
        return Locked({}, {}, {})
    # Leases are locked after accounts, keys and holds, codes last: the one global order holds.
    if sqlite_raw.serves(conn):
        locked = _load_sqlite(conn, ids.account_ids, ids.key_ids, ids.request_ids)
    else:
        locked = _load_async(conn, ids.account_ids, ids.key_ids, ids.request_ids, lock_rows)
    if ids.code_hashes:
        query = _SELECT_CODES.with_for_update() if lock_rows else _SELECT_CODES
        for r in conn.execute(query, {"hashes": ids.code_hashes}):
            locked.codes[r.code_hash] = CodeRow(int(r.id), r.prefix, int(r.credits), r.expires_at, r.redeemed_at)
    if ids.lease_ids:
        raw = sqlite_raw.serves(conn)
        if raw:
            rows = sqlite_raw.fetch(conn, _SQLITE_LEASES, {"ids": json.dumps(ids.lease_ids)})
            stamp = sqlite_raw.to_datetime
            locked.leases = {r[0]: LeaseRow(r[0], r[1], r[2], r[3], r[4], stamp(r[5])) for r in rows}
        else:
            query = _SELECT_LEASES.with_for_update() if lock_rows else _SELECT_LEASES
            locked.leases = {r.id: LeaseRow(*r) for r in conn.execute(query, {"ids": ids.lease_ids})}
    if ids.billed_ids:
        query = _SELECT_BILLED
        locked.billed = {r.request_id: int(r.credits) for r in conn.execute(query, {"ids": ids.billed_ids})}
    return locked


def _load_async(
    conn: Connection, account_ids: set[int], key_ids: set[int], request_ids: list[str], lock_rows: bool
) -> Locked:
    q_accounts, q_keys, q_holds = _LOCKED if lock_rows else _PLAIN
    account_rows = {
        r.id: AccountRow(r.balance, r.reserved, bool(r.disabled))
        for r in conn.execute(q_accounts, {"ids": list(account_ids)})
    }
    key_rows: dict[int, KeyRow] = {}
    if key_ids:
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
            for r in conn.execute(q_keys, {"ids": list(key_ids)})
        }
    hold_rows: dict[str, HoldRow] = {}
    if request_ids:
        hold_rows = {r.request_id: HoldRow(*r) for r in conn.execute(q_holds, {"ids": request_ids})}
    return Locked(account_rows, key_rows, hold_rows)


def _load_sqlite(conn: Connection, account_ids: set[int], key_ids: set[int], request_ids: list[str]) -> Locked:
    """``_load`` on the raw driver (see ``store.sqlite_raw``); the batch's ids go in as one JSON array."""
    fetch, stamp = sqlite_raw.fetch, sqlite_raw.to_datetime
    account_rows = {
        aid: AccountRow(balance, reserved, bool(disabled))
        for aid, balance, reserved, disabled in fetch(conn, _SQLITE_SELECTS[0], {"ids": json.dumps(list(account_ids))})
    }
    key_rows: dict[int, KeyRow] = {}
    if key_ids:
        key_rows = {
            kid: KeyRow(retention, threshold, stamp(p_start), p_spent, p_reserved, stamp(m_start), m_spent)
            for kid, retention, threshold, p_start, p_spent, p_reserved, m_start, m_spent in fetch(
                conn, _SQLITE_SELECTS[1], {"ids": json.dumps(list(key_ids))}
            )
        }
    hold_rows: dict[str, HoldRow] = {}
    if request_ids:
        rows = fetch(conn, _SQLITE_SELECTS[2], {"ids": json.dumps(request_ids)})
        hold_rows = {row[0]: HoldRow(*row) for row in rows}
    return Locked(account_rows, key_rows, hold_rows)


def _execute(conn: Connection, statement: Any, rows: list[dict[str, Any]]) -> None:
    if sqlite_raw.serves(conn):
        sqlite_raw.execute_many(conn, statement, rows)
    else:
        conn.execute(statement, rows)


def _write(conn: Connection, locked: Locked, changes: Changes, owner: str) -> None:
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
            "used_at": changes.now if k.used else None,
        }
        for i, k in locked.keys.items()
        if k.touched
    ]
    if touched_keys:
        _execute(conn, _UPDATE_KEY, touched_keys)
    if changes.new_holds:
        _execute(conn, _INSERT_HOLDS, [_new_hold(h, owner, changes) for h in changes.new_holds])
    if changes.new_leases:
        fresh = [
            {
                "id": lease.id,
                "account_id": lease.account_id,
                "key_id": lease.key_id,
                "credits": 0,
                "status": "held",
                "owner": owner,
                "created_at": changes.now,
                "expires_at": lease.expires_at,
            }
            for lease in changes.new_leases
        ]
        _execute(conn, _INSERT_LEASES, fresh)
    touched_leases = [
        {"lid": lease.id, "new_credits": lease.credits, "new_status": lease.status, "new_expires": lease.expires_at}
        for lease in locked.leases.values()
        if lease.touched
    ]
    if touched_leases:
        _execute(conn, _UPDATE_LEASE, touched_leases)
    if changes.closed_holds:
        _execute(conn, _CLOSE_HOLDS, [{"rid": h.request_id, "new_status": h.status} for h in changes.closed_holds])
    if changes.ledger_rows:
        _execute(conn, _INSERT_LEDGER, changes.ledger_rows)
    if changes.usage_rows:
        _execute(conn, _INSERT_USAGE, changes.usage_rows)
        _execute(conn, _ADD_DAYS[conn.dialect.name], _days(changes.usage_rows))
    for code in changes.redeemed_codes:
        spent = conn.execute(_SPEND_CODE, {"cid": code.id, "at": code.redeemed_at, "by": code.redeemed_by})
        if spent.rowcount != 1:  # rolls the whole commit back: nothing is credited
            raise RuntimeError(f"redemption code {code.prefix} was spent by another transaction")


def _days(usage_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The batch's usage summed by day (UTC), account, model and key."""
    days: dict[tuple[Any, ...], dict[str, Any]] = {}
    names: dict[datetime, str] = {}  # a batch's rows share one ``now``
    for row in usage_rows:
        stamp = row["created_at"]
        day = names.get(stamp)
        if day is None:
            day = names[stamp] = stamp.astimezone(UTC).strftime("%Y-%m-%d")
        group = (row["account_id"], day, row["model"], row["key_prefix"])
        summed = days.get(group)
        if summed is None:
            days[group] = {
                "account_id": row["account_id"],
                "day": day,
                "model": row["model"],
                "key_prefix": row["key_prefix"],
                "requests": 1,
                "input_tokens": row["input_tokens"],
                "output_tokens": row["output_tokens"],
                "credits": row["credits"],
            }
        else:
            summed["requests"] += 1
            summed["input_tokens"] += row["input_tokens"]
            summed["output_tokens"] += row["output_tokens"]
            summed["credits"] += row["credits"]
    return list(days.values())


def _new_hold(hold: HoldRow, owner: str, changes: Changes) -> dict[str, Any]:
    return {
        "request_id": hold.request_id,
        "account_id": hold.account_id,
        "key_id": hold.key_id,
        "credits": hold.credits,
        "model": hold.model,
        "status": hold.status,
        "owner": owner,
        "created_at": changes.now,
    }
