"""The ledger's decisions, without I/O: given the rows one transaction has locked, decide each
operation in order and collect the rows to write.

Every change of an account's ``balance`` or ``reserved`` is one of these operations, decided here
and nowhere else, and written by the ledger's one writer (``store.ledger.apply_batch``):

* ``Reservation``: hold credits before a request runs; needs the account's available credits
  (balance minus what is held) and room under the key's spend limit for its period.
* ``Settlement``: close a hold exactly once and charge at most the hold (so neither the key's
  spend limit nor the account's balance, both checked at reservation, can be overrun).
* ``Release``: close a hold whose process died without charging (its tokens are unknown).
* ``Grant``: add (or, negative, remove) credits; removal never takes what holds were promised.
* ``Redemption``: spend a redemption code and credit its amount to the account, exactly once (the
  code's row is locked with the account's, and its ``redeemed_at`` is set in the same commit).

Credit leases (``core.ledger``'s ``LeasePolicy``): a process holds credits of one (account, key)
in bulk and reserves against them in memory, so a request commits nothing before it runs. A
lease is a real hold in the store (counted in the account's ``reserved`` and the key's
``period_reserved``), so processes and replicas together never pass a balance or a key's limit:

* ``LeaseGrow``: take (or take more) credits for a lease; ``need`` must fit like a reservation,
  ``extra`` is taken only as far as it fits in half the room left (other processes keep the rest).
* ``LeaseCharge``: a request's settlement, charged against its lease (at most its hold and what
  the lease holds); once per request id. A lease already closed charges the account directly,
  capped by what it has available and the key's room, so no limit is passed even then.
* ``LeaseReturn``: extend a lease's expiry (the holder is alive), or close it and give back what
  it still holds (idle, revoked, or the process stopping).
* ``LeaseExpiry``: close a lease whose holder stopped extending it (its process died), giving back
  what it held; its in-memory reservations died with the process, unbilled, like a ``Release``.

A disabled account's reservations are refused here, inside the transaction, so disabling an
account stops its billed requests at once on every replica.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from gatewright.core.billing import credits_to_usd
from gatewright.core.clock import aware, month_start, period_start
from gatewright.core.errors import (
    Conflict,
    GatewrightError,
    InsufficientCredits,
    InvalidRequest,
    NotFound,
    PermissionDenied,
)
from gatewright.core.platform import Hold, Principal, Settlement, SettleStatus

MAX_BALANCE = 2 * 10**15  # 1,000,000,000 USD: far from a BIGINT's limit, so sums never overflow
PERIOD_NAMES = {"day": "per day", "week": "per week", "month": "per month", "no_reset": "in total"}


def usd_text(credits: int) -> str:
    """USD with every significant digit a credit has (1 credit = 0.0000005 USD), no trailing zeros."""
    return f"{credits_to_usd(credits):.7f}".rstrip("0").rstrip(".")


@dataclass(slots=True)
class Reservation:
    principal: Principal
    credits: int
    request_id: str
    model: str


@dataclass(slots=True)
class Release:
    """Close an open hold unbilled (its process is gone)."""

    request_id: str
    account_id: int
    key_id: int


@dataclass(slots=True)
class Grant:
    account_id: int
    credits: int  # negative: a removal
    note: str
    actor: str | None = None  # who: "operator:<prefix>", "cli", "system"


@dataclass(slots=True)
class Redemption:
    account_id: int
    code_hash: str  # sha256 of the code, as stored
    actor: str | None = None


@dataclass(slots=True)
class LeaseGrow:
    lease_id: str
    principal: Principal
    need: int  # must fit, or the request is refused
    extra: int  # taken as far as it fits in half the room left after ``need``
    asked: int  # the request's worst case (for the refusal's words)
    ttl: timedelta


@dataclass(slots=True)
class LeaseCharge:
    """A request's settlement against its lease; ``close``: the lease's holder is done with it
    (revoked, and this was its last request), so what it still holds goes back too."""

    lease_id: str
    settlement: Settlement
    ttl: timedelta
    close: bool = False

    @property
    def hold(self) -> Hold:
        return self.settlement.hold

    @property
    def status(self) -> SettleStatus:
        return self.settlement.status


@dataclass(slots=True)
class LeaseReturn:
    """``close``: give back everything the lease holds; otherwise only extend its expiry."""

    lease_id: str
    account_id: int
    key_id: int
    ttl: timedelta
    close: bool = False


@dataclass(slots=True)
class LeaseExpiry:
    """Close a lease nobody extends; ``before``: only if it expired before then (None: always)."""

    lease_id: str
    account_id: int
    key_id: int
    before: datetime | None


class LeaseGone:
    """A ``LeaseGrow``'s outcome when the lease was closed meanwhile (expired): take a new one."""


LEASE_GONE = LeaseGone()

Operation = (
    Reservation | Settlement | Release | Grant | Redemption | LeaseGrow | LeaseCharge | LeaseReturn | LeaseExpiry
)


@dataclass(slots=True)
class HoldRow:
    request_id: str
    account_id: int
    key_id: int
    credits: int
    model: str
    status: str  # held | settled | released


@dataclass(slots=True)
class LeaseRow:
    id: str
    account_id: int
    key_id: int
    credits: int  # held now (in the account's reserved and the key's period_reserved)
    status: str  # held | returned | released
    expires_at: datetime | None
    touched: bool = False


@dataclass(slots=True)
class AccountRow:
    balance: int
    reserved: int
    disabled: bool = False
    touched: bool = False


@dataclass(slots=True)
class CodeRow:
    id: int
    prefix: str
    credits: int
    expires_at: datetime | None
    redeemed_at: datetime | None
    redeemed_by: int | None = None


@dataclass(slots=True)
class KeyRow:
    retention: str | None
    threshold: int | None
    period_start: datetime | None
    period_spent: int
    period_reserved: int
    month_start: datetime | None
    month_spent: int
    touched: bool = False
    used: bool = False  # a request of the key was reserved or settled: its last use is now
    rolled_at: datetime | None = None  # a batch's operations share one ``now``: roll once for it

    def roll(self, now: datetime) -> None:
        """Start a new spending period (and month) when ``now`` is past the current one."""
        if now is self.rolled_at:
            return
        self.rolled_at = now
        start = period_start(self.retention, now)
        current = aware(self.period_start)
        if current is None or current < start:
            self.period_start, self.period_spent, self.touched = start, 0, True
        month = month_start(now)
        current_month = aware(self.month_start)
        if current_month is None or current_month < month:
            self.month_start, self.month_spent, self.touched = month, 0, True


@dataclass
class Locked:
    """What one group commit read (and, on PostgreSQL, locked) before deciding."""

    accounts: dict[int, AccountRow]
    keys: dict[int, KeyRow]
    holds: dict[str, HoldRow]
    codes: dict[str, CodeRow] = field(default_factory=dict)  # by code hash
    leases: dict[str, LeaseRow] = field(default_factory=dict)
    billed: dict[str, int] = field(default_factory=dict)  # request id → credits, of earlier attempts


@dataclass
class Changes:
    """Rows one group commit writes, collected while deciding each operation in order (the
    touched account and key rows are marked in ``Locked``)."""

    now: datetime
    new_holds: list[HoldRow] = field(default_factory=list)
    closed_holds: list[HoldRow] = field(default_factory=list)
    ledger_rows: list[dict[str, Any]] = field(default_factory=list)  # columns of the ledger table
    usage_rows: list[dict[str, Any]] = field(default_factory=list)  # columns of usage_records
    redeemed_codes: list[CodeRow] = field(default_factory=list)
    new_leases: list[LeaseRow] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Involved:
    """The rows a batch's decisions read: what a transaction loads (and locks) first."""

    account_ids: set[int]
    key_ids: set[int]
    request_ids: list[str]  # holds
    code_hashes: list[str] = field(default_factory=list)  # redemption codes
    lease_ids: list[str] = field(default_factory=list)
    billed_ids: list[str] = field(default_factory=list)  # lease charges an earlier attempt may have written


def involved(batch: Sequence[Operation], retry: bool) -> Involved:
    """``retry``: an earlier attempt may have committed without our knowing, so reservations look
    for holds they may already have (fresh request ids have none: skip the query)."""
    accounts: set[int] = set()
    keys: set[int] = set()
    request_ids: list[str] = []
    code_hashes: list[str] = []
    lease_ids: set[str] = set()
    billed_ids: list[str] = []
    for op in batch:
        if isinstance(op, LeaseCharge):
            hold = op.settlement.hold
            accounts.add(hold.account_id)
            keys.add(hold.key_id)
            lease_ids.add(op.lease_id)
            if retry:
                billed_ids.append(hold.request_id)
        elif isinstance(op, LeaseGrow):
            accounts.add(op.principal.account_id)
            keys.add(op.principal.key_id)
            lease_ids.add(op.lease_id)
        elif isinstance(op, LeaseReturn | LeaseExpiry):
            accounts.add(op.account_id)
            keys.add(op.key_id)
            lease_ids.add(op.lease_id)
        elif isinstance(op, Reservation):
            accounts.add(op.principal.account_id)
            keys.add(op.principal.key_id)
            if retry:
                request_ids.append(op.request_id)
        elif isinstance(op, Settlement):
            accounts.add(op.hold.account_id)
            keys.add(op.hold.key_id)
            request_ids.append(op.hold.request_id)
        elif isinstance(op, Release):
            accounts.add(op.account_id)
            keys.add(op.key_id)
            request_ids.append(op.request_id)
        elif isinstance(op, Redemption):
            accounts.add(op.account_id)
            code_hashes.append(op.code_hash)
        else:
            accounts.add(op.account_id)
    return Involved(accounts, keys, request_ids, sorted(set(code_hashes)), sorted(lease_ids), billed_ids)


def _hold_of(row: HoldRow, prefix: str) -> Hold:
    return Hold(row.request_id, row.account_id, row.key_id, prefix, row.credits, row.model)


def _refuse(
    account: AccountRow | None, key: KeyRow | None, need: int, asked: int, now: datetime
) -> GatewrightError | None:
    """Why ``need`` more credits cannot be held for a request that may cost ``asked`` (None: they can).
    ``asked - need`` is already held for it (a lease's unused part)."""
    if account is None or key is None:
        return InsufficientCredits("This API key's account no longer exists.", code="account_missing")
    if account.disabled:
        return PermissionDenied("This API key's account is disabled.", code="account_disabled")
    key.roll(now)
    ours = asked - need
    available = account.balance - account.reserved
    if need > available:
        return InsufficientCredits(
            f"Insufficient credits: this request may cost up to {asked} credits "
            f"({usd_text(asked)} USD) and the account has {max(available + ours, 0)} available. "
            "Add credits, or lower max_tokens.",
            code="insufficient_credits",
        )
    if key.threshold is not None and key.period_spent + key.period_reserved + need > key.threshold:
        left = max(key.threshold - key.period_spent - key.period_reserved + ours, 0)
        period = PERIOD_NAMES.get(key.retention or "", "per period")
        return InsufficientCredits(
            f"This API key's spending limit of {usd_text(key.threshold)} USD {period} leaves "
            f"{usd_text(left)} USD; this request may cost up to {usd_text(asked)} USD. "
            "Raise the key's limit, or lower max_tokens.",
            code="key_limit_exceeded",
        )
    return None


def _hold_more(account: AccountRow, key: KeyRow, credits: int) -> None:
    account.reserved += credits
    account.touched = True
    key.period_reserved += credits
    key.touched = key.used = True


def decide_reserve(op: Reservation, locked: Locked, changes: Changes) -> Hold | GatewrightError:
    existing = locked.holds.get(op.request_id)
    if existing is not None and existing.key_id == op.principal.key_id:
        # An earlier attempt of this batch committed although its outcome was lost: same hold.
        return _hold_of(existing, op.principal.prefix)
    account = locked.accounts.get(op.principal.account_id)
    key = locked.keys.get(op.principal.key_id)
    refused = _refuse(account, key, op.credits, op.credits, changes.now)
    if refused is not None:
        return refused
    assert account is not None and key is not None
    _hold_more(account, key, op.credits)
    row = HoldRow(op.request_id, op.principal.account_id, op.principal.key_id, op.credits, op.model, "held")
    changes.new_holds.append(row)
    locked.holds[op.request_id] = row
    return _hold_of(row, op.principal.prefix)


def decide_settle(op: Settlement, locked: Locked, changes: Changes) -> int:
    """Close the hold and charge; returns the credits charged (0 when it was already closed)."""
    held = locked.holds.get(op.hold.request_id)
    if held is None or held.status != "held":
        return 0  # settled, released or never written: nothing more to charge
    account = locked.accounts[held.account_id]
    key = locked.keys[held.key_id]
    key.roll(changes.now)
    hold_credits = held.credits
    # Never more than the hold: the reservation passed the key's limit and the account's balance
    # with this amount, so capping here keeps both hard (an upstream that counted more tokens than
    # the hold covers is charged the hold; the pipeline logs the excess). Never below zero either.
    spendable = account.balance - (account.reserved - hold_credits)
    charge = max(0, min(op.cost.credits, hold_credits, spendable))
    account.reserved -= hold_credits
    key.period_reserved -= hold_credits
    held.status = "settled"
    changes.closed_holds.append(held)
    _charge(account, key, op, charge, changes)
    return charge


def _charge(account: AccountRow, key: KeyRow, settlement: Settlement, charge: int, changes: Changes) -> None:
    """Take ``charge`` from the balance and the key's period, with its ledger and usage rows."""
    hold, usage, model = settlement.hold, settlement.usage, settlement.model
    account.balance -= charge
    account.touched = True
    key.period_spent += charge
    key.month_spent += charge
    key.touched = key.used = True
    if charge:
        changes.ledger_rows.append(
            {
                "account_id": hold.account_id,
                "key_id": hold.key_id,
                "request_id": hold.request_id,
                "kind": "charge",
                "credits": -charge,
                "balance_after": account.balance,
                "note": model,
                "created_at": changes.now,
                "actor": None,
            }
        )
    changes.usage_rows.append(
        {
            "request_id": hold.request_id,
            "account_id": hold.account_id,
            "key_id": hold.key_id,
            "key_prefix": hold.key_prefix,
            "model": model,
            "input_tokens": usage.input_tokens,
            "cached_tokens": usage.cached_tokens,
            "output_tokens": usage.output_tokens,
            "reasoning_tokens": usage.reasoning_tokens,
            "credits": charge,
            "usd": credits_to_usd(charge),
            "status": settlement.status,
            "estimated": usage.estimated,
            "created_at": changes.now,
            "dialect": settlement.dialect,
            "latency_ms": settlement.latency_ms,
        }
    )


def decide_release(op: Release, locked: Locked, changes: Changes) -> bool:
    """Close the hold without a charge; False when it was already closed."""
    held = locked.holds.get(op.request_id)
    account = locked.accounts.get(op.account_id)
    key = locked.keys.get(op.key_id)
    if held is None or held.status != "held" or account is None or key is None:
        return False
    account.reserved -= held.credits
    account.touched = True
    key.period_reserved -= held.credits
    key.touched = True
    held.status = "released"
    changes.closed_holds.append(held)
    return True


def decide_grant(op: Grant, locked: Locked, changes: Changes) -> int | GatewrightError:
    """Change the balance by ``op.credits``; returns the new balance. One ledger row."""
    if op.credits == 0:
        return InvalidRequest("Invalid 'credits': must not be 0.", param="credits")
    account = locked.accounts.get(op.account_id)
    if account is None:
        return NotFound(f"No account {op.account_id}.")
    balance = account.balance + op.credits
    if balance > MAX_BALANCE:
        return InvalidRequest(
            f"Adding {op.credits} credits would take the balance past {MAX_BALANCE:,} credits.", param="credits"
        )
    if balance - account.reserved < 0:
        return InvalidRequest(
            f"Cannot remove {-op.credits} credits: the account has {account.balance - account.reserved} available "
            f"({account.balance} balance, {account.reserved} reserved by requests in flight).",
            param="credits",
        )
    account.balance = balance
    account.touched = True
    changes.ledger_rows.append(
        {
            "account_id": op.account_id,
            "key_id": None,
            "request_id": None,
            "kind": "grant" if op.credits >= 0 else "adjust",
            "credits": op.credits,
            "balance_after": balance,
            "note": op.note,
            "created_at": changes.now,
            "actor": op.actor,
        }
    )
    return balance


def decide_redeem(op: Redemption, locked: Locked, changes: Changes) -> int | GatewrightError:
    """Spend the code and credit its amount; returns the credits added. One ledger row."""
    code = locked.codes.get(op.code_hash)
    if code is None:
        return NotFound("Unknown redemption code.", param="code", code="code_not_found")
    if code.redeemed_at is not None:
        return Conflict("This redemption code was already redeemed.", param="code", code="code_redeemed")
    expires = aware(code.expires_at)
    if expires is not None and expires <= changes.now:
        return Conflict("This redemption code has expired.", param="code", code="code_expired", status=410)
    account = locked.accounts.get(op.account_id)
    if account is None:
        return NotFound(f"No account {op.account_id}.")
    balance = account.balance + code.credits
    if balance > MAX_BALANCE:
        return InvalidRequest(f"The balance cannot go past {MAX_BALANCE:,} credits.", param="code")
    account.balance = balance
    account.touched = True
    code.redeemed_at, code.redeemed_by = changes.now, op.account_id
    changes.redeemed_codes.append(code)
    changes.ledger_rows.append(
        {
            "account_id": op.account_id,
            "key_id": None,
            "request_id": None,
            "kind": "redeem",
            "credits": code.credits,
            "balance_after": balance,
            "note": f"redemption code {code.prefix}",
            "created_at": changes.now,
            "actor": op.actor,
        }
    )
    return code.credits


def decide_lease_grow(
    op: LeaseGrow, locked: Locked, changes: Changes
) -> tuple[int, int | None] | GatewrightError | LeaseGone:
    """Hold ``need`` (and as much of ``extra`` as fits in half the room left) more for the lease;
    returns the credits added and the key's limit they were taken under."""
    lease = locked.leases.get(op.lease_id)
    if lease is not None and lease.status != "held":
        return LEASE_GONE
    account = locked.accounts.get(op.principal.account_id)
    key = locked.keys.get(op.principal.key_id)
    refused = _refuse(account, key, op.need, op.asked, changes.now)
    if refused is not None:
        return refused
    assert account is not None and key is not None
    room = account.balance - account.reserved - op.need
    if key.threshold is not None:
        room = min(room, key.threshold - key.period_spent - key.period_reserved - op.need)
    added = op.need + max(0, min(op.extra, room // 2))
    _hold_more(account, key, added)
    expires = changes.now + op.ttl
    if lease is None:
        lease = LeaseRow(op.lease_id, op.principal.account_id, op.principal.key_id, 0, "held", expires)
        locked.leases[op.lease_id] = lease
        changes.new_leases.append(lease)
    lease.credits += added
    lease.expires_at, lease.touched = expires, True
    return added, key.threshold


def lease_charge(settlement: Settlement) -> int:
    """What a settlement against a held lease charges: its price, at most its hold (the lease
    holds the hold for it). Its holder counts it in memory and tells the client this much."""
    return max(0, min(settlement.cost.credits, settlement.hold.credits))


def decide_lease_charge(op: LeaseCharge, locked: Locked, changes: Changes) -> int:
    """Charge a request against its lease; returns the credits charged."""
    settlement = op.settlement
    hold = settlement.hold
    earlier = locked.billed.get(hold.request_id)
    if earlier is not None:
        return earlier  # an earlier attempt of this batch committed although its outcome was lost
    account = locked.accounts[hold.account_id]
    key = locked.keys[hold.key_id]
    key.roll(changes.now)
    lease = locked.leases.get(op.lease_id)
    wanted = lease_charge(settlement)
    if lease is not None and lease.status == "held":
        # The lease's credits are held for this request's worst case (and its siblings'): taking
        # the charge from them passes neither the balance nor the key's limit.
        charge = min(wanted, lease.credits)
        lease.credits -= charge
        account.reserved -= charge
        key.period_reserved -= charge
        lease.expires_at, lease.touched = changes.now + op.ttl, True
        if op.close:
            _close_lease(lease, account, key, "returned")
    else:
        # The lease expired under a live holder (it stopped extending it): charge only what is
        # still free, so the balance and the key's limit hold even then.
        room = account.balance - account.reserved
        if key.threshold is not None:
            room = min(room, key.threshold - key.period_spent - key.period_reserved)
        charge = max(0, min(wanted, room))
    _charge(account, key, settlement, charge, changes)
    locked.billed[hold.request_id] = charge
    return charge


def _close_lease(lease: LeaseRow, account: AccountRow, key: KeyRow, status: str) -> int:
    back = lease.credits
    account.reserved -= back
    account.touched = True
    key.period_reserved -= back
    key.touched = True
    lease.credits, lease.status, lease.touched = 0, status, True
    return back


def decide_lease_return(op: LeaseReturn, locked: Locked, changes: Changes) -> bool:
    """Extend the lease's expiry, or close it; False when the lease is no longer held (expired)."""
    lease = locked.leases.get(op.lease_id)
    account = locked.accounts.get(op.account_id)
    key = locked.keys.get(op.key_id)
    if lease is None or lease.status != "held" or account is None or key is None:
        return False
    if op.close:
        _close_lease(lease, account, key, "returned")
    else:
        lease.expires_at, lease.touched = changes.now + op.ttl, True
    return True


def decide_lease_expiry(op: LeaseExpiry, locked: Locked, changes: Changes) -> int:
    """Close an expired lease; returns the credits it gave back (0: extended meanwhile, or closed)."""
    lease = locked.leases.get(op.lease_id)
    account = locked.accounts.get(op.account_id)
    key = locked.keys.get(op.key_id)
    if lease is None or lease.status != "held" or account is None or key is None:
        return 0
    expires = aware(lease.expires_at)
    if op.before is not None and expires is not None and expires >= op.before:
        return 0  # its holder extended it after the sweep read it: alive
    return _close_lease(lease, account, key, "released")


_DECIDE: dict[type, Callable[[Any, Locked, Changes], Any]] = {
    Reservation: decide_reserve,
    Settlement: decide_settle,
    Release: decide_release,
    Grant: decide_grant,
    Redemption: decide_redeem,
    LeaseGrow: decide_lease_grow,
    LeaseCharge: decide_lease_charge,
    LeaseReturn: decide_lease_return,
    LeaseExpiry: decide_lease_expiry,
}


def decide_batch(batch: Sequence[Operation], locked: Locked, changes: Changes) -> list[Any]:
    """Each operation's outcome, in order: a ``Hold`` or error (reservation), the credits charged
    (settlement), whether a hold was closed (release), the new balance or an error (grant); for
    leases: the credits added or an error (grow), charged (charge), given back (expiry), whether it
    was still held (return)."""
    return [_DECIDE[type(op)](op, locked, changes) for op in batch]
