"""Identifiers: unique and URL-safe, made without a system call on the hot path.

They name things and are never secrets (keys, webhook secrets and console sessions come from
``secrets``), so their random bits come from a generator of their own, seeded from the OS at import
and again in a forked child (a caller's ``random.seed`` cannot make them repeat). ``os.urandom`` is
a system call that gives up the GIL, and on a busy gateway another thread (then the ledger's
writer) took it each time: the two a request cost the event loop about six times what they cost
with no writer waiting (docs/benchmarks.md, "Request ids in time order, rows in one INSERT").
"""

from __future__ import annotations

import os
import random
import time

_bits = random.Random()
os.register_at_fork(after_in_child=_bits.seed)


def random_hex(nbytes: int = 12) -> str:
    return f"{_bits.getrandbits(8 * nbytes):0{2 * nbytes}x}"


def request_id() -> str:
    """``req_``, the time in milliseconds (12 hex digits, as in a UUIDv7), then 64 random bits.

    Time first so the ledger's and usage records' unique indexes on the id grow at their right
    edge: with random ids each commit dirtied a leaf page per row per index, and the ledger's writer
    spent 2.7 times the CPU on a store of a million rows (docs/benchmarks.md, "Request ids in time
    order, rows in one INSERT").
    """
    return f"req_{time.time_ns() // 1_000_000:012x}{random_hex(8)}"


def tool_call_id() -> str:
    return "call_" + random_hex(12)


def now() -> int:
    return int(time.time())
