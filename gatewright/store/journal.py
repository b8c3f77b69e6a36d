"""The settlement journal: a finished request's charge written to a local append-only file before
its answer ends, and applied to the store by the ledger's writer in groups afterwards.

A line is one ``os.write`` to a file opened ``O_APPEND``: once the call returns the line is in the
operating system's cache, so a process killed at any instant after it leaves the charge behind,
the durability SQLite's WAL with ``synchronous=NORMAL`` gives a commit (lost only with the machine's
power, as a commit is). Whoever starts next on the same data directory applies what a dead
process left (``SettlementJournal.adopt``); charges are idempotent per request id, so a line
applied twice charges once.

Each process writes its own segments, named after it, and holds an exclusive ``flock`` on each
while it lives: a segment nobody holds belongs to a process that is gone. A segment whose lines
are all committed is emptied (or, once full and sealed, deleted), so the files stay small.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson

from gatewright.core.ledger_rules import LeaseCharge
from gatewright.core.platform import Hold, Settlement
from gatewright.core.types import Cost, Usage

log = logging.getLogger("gatewright.ledger")

SUFFIX = ".journal"
SEGMENT_BYTES = 4 << 20  # a busy process seals its segment at this size and starts another


def encode(charge: LeaseCharge) -> bytes:
    settlement = charge.settlement
    hold, usage, cost = settlement.hold, settlement.usage, settlement.cost
    return orjson.dumps(
        {
            "lease": charge.lease_id,
            "close": charge.close,
            "hold": [hold.request_id, hold.account_id, hold.key_id, hold.key_prefix, hold.credits, hold.model],
            "usage": [
                usage.input_tokens,
                usage.output_tokens,
                usage.cached_tokens,
                usage.reasoning_tokens,
                usage.cache_write_tokens,
                usage.estimated,
            ],
            "cost": [cost.credits, cost.usd],
            "status": settlement.status,
            "model": settlement.model,
            "dialect": settlement.dialect,
            "latency_ms": settlement.latency_ms,
        },
        option=orjson.OPT_APPEND_NEWLINE,
    )


def decode(line: bytes) -> LeaseCharge:
    """A journal line as the charge it records. Applied by whoever adopts it, after its holder
    died: the charge does not extend the lease (ttl 0), so the next sweep closes it."""
    raw: dict[str, Any] = orjson.loads(line)
    request_id, account_id, key_id, prefix, credits, model = raw["hold"]
    inputs, outputs, cached, reasoning, cache_write, estimated = raw["usage"]
    settlement = Settlement(
        Hold(str(request_id), int(account_id), int(key_id), str(prefix), int(credits), str(model)),
        Usage(int(inputs), int(outputs), int(cached), int(reasoning), int(cache_write), bool(estimated)),
        Cost(int(raw["cost"][0]), float(raw["cost"][1])),
        raw["status"],
        str(raw["model"]),
        raw["dialect"],
        raw["latency_ms"],
    )
    return LeaseCharge(str(raw["lease"]), settlement, timedelta(0), bool(raw["close"]))


def read_lines(data: bytes, path: Path) -> list[LeaseCharge]:
    """Every whole line; a torn last line (the machine lost power mid-write) or a line this
    version cannot read is logged and skipped."""
    charges: list[LeaseCharge] = []
    for number, line in enumerate(data.split(b"\n"), 1):
        if not line:
            continue
        try:
            charges.append(decode(line))
        except (ValueError, KeyError, TypeError) as failure:
            log.error("%s line %d is not a settlement, skipped: %r", path, number, failure)
    return charges


class _Segment:
    __slots__ = ("fd", "path", "pending", "sealed", "size")

    def __init__(self, path: Path) -> None:
        self.path = path
        # Made under another name, locked, then renamed into place: an adopter never sees a
        # segment of a live process unlocked (it would take the segment, and the process's leases).
        unseen = path.with_name(path.name + ".new")
        self.fd = os.open(unseen, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            # Held while this process lives (released by the kernel when it dies, however it dies).
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(unseen, path)
        except BaseException:
            os.close(self.fd)
            with contextlib.suppress(OSError):
                os.unlink(unseen)
            raise
        self.pending = 0  # lines written and not yet committed
        self.size = 0
        self.sealed = False

    def drop(self) -> None:
        os.unlink(self.path)
        os.close(self.fd)


def owner_of(path: Path) -> str:
    return path.name[: -len(SUFFIX)].rsplit("-", 1)[0]


@dataclass
class Adopted:
    """A dead process's segment, locked by its adopter until ``finish`` (applied: deleted) or
    ``leave`` (not applied: the next sweep tries again)."""

    path: Path
    fd: int
    charges: list[LeaseCharge]

    @property
    def owner(self) -> str:
        """The process that wrote it (segments are named ``<owner>-<serial>``)."""
        return owner_of(self.path)

    def finish(self) -> None:
        os.unlink(self.path)
        os.close(self.fd)

    def leave(self) -> None:
        os.close(self.fd)


class SettlementJournal:
    """One process's journal in ``directory`` (``core.ledger.Journal``)."""

    def __init__(self, directory: Path, owner: str, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.directory = directory
        self.owner = owner
        self.segment_bytes = segment_bytes
        directory.mkdir(parents=True, exist_ok=True)
        self._serial = 0
        self._segments: dict[Path, _Segment] = {}  # this process's, open
        self._current = self._open_segment()

    def _open_segment(self) -> _Segment:
        self._serial += 1
        segment = _Segment(self.directory / f"{self.owner}-{self._serial:06d}{SUFFIX}")
        self._segments[segment.path] = segment
        return segment

    def append(self, charge: LeaseCharge) -> _Segment:
        """Write the charge's line; returns the ticket ``committed`` takes. Raises ``OSError``
        when the line is not whole in the file (then nothing of it is)."""
        line = encode(charge)
        segment = self._current
        try:
            written = os.write(segment.fd, line)
        except OSError:
            self._cut(segment)
            raise
        if written != len(line):  # a full disk: a part line would spoil the next one
            self._cut(segment)
            raise OSError(f"the settlement journal took {written} of {len(line)} bytes")
        segment.pending += 1
        segment.size += written
        if segment.size >= self.segment_bytes:
            segment.sealed = True
            self._current = self._open_segment()
        return segment

    def _cut(self, segment: _Segment) -> None:
        try:
            os.ftruncate(segment.fd, segment.size)
        except OSError as failure:
            log.error("cutting a partly written journal line failed: %r", failure)

    def committed(self, ticket: object) -> None:
        """A line's charge is in the store: a segment with nothing left uncommitted is emptied."""
        assert isinstance(ticket, _Segment)
        ticket.pending -= 1
        if ticket.pending:
            return
        if ticket.sealed:
            del self._segments[ticket.path]
            ticket.drop()
        elif ticket.size:
            os.ftruncate(ticket.fd, 0)
            ticket.size = 0

    def close(self) -> None:
        """At stop: segments with nothing uncommitted go; others stay for the next start."""
        for segment in self._segments.values():
            if segment.pending:
                log.warning("%d settlements not yet in the store stay in %s", segment.pending, segment.path)
                os.close(segment.fd)
            else:
                segment.drop()
        self._segments.clear()

    def has_segments(self, owner: str) -> bool:
        """Whether a segment of ``owner`` is still here: its own while it lives, or one another
        adopter has not finished yet."""
        return any(owner_of(path) == owner for path in self.directory.glob(f"{owner}-*{SUFFIX}"))

    def adopt(self) -> list[Adopted]:
        """The segments of processes that are gone (nobody holds their lock), each locked for
        this process until it is finished or left."""
        adopted: list[Adopted] = []
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            if path in self._segments:
                continue
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # finished by another adopter meanwhile
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)  # its process lives, or another adopter has it
                continue
            if os.fstat(fd).st_nlink == 0:
                os.close(fd)  # another adopter applied and deleted it before our lock
                continue
            with os.fdopen(os.dup(fd), "rb") as file:
                data = file.read()
            adopted.append(Adopted(path, fd, read_lines(data, path)))
        return adopted
