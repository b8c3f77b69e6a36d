"""Identifiers: unique and URL-safe, made without a system call on the hot path.

They name things and are never secrets (keys, webhook secrets and console sessions come from
``secrets``), so their random bits come from the ``random`` module's generator, which Python seeds
from the OS at start and again in a forked child. ``os.urandom`` is a system call that releases
the GIL, and the event loop then waited for the ledger's writer thread to hand it back: two of
them a request cost more than the rest of the ids' work (docs/benchmarks.md, "Request ids in time
order, rows in one INSERT").
"""

from __future__ import annotations

import random
import time


def random_hex(nbytes: int = 12) -> str:
    return f"{random.getrandbits(8 * nbytes):0{2 * nbytes}x}"


def request_id() -> str:
    """``req_``, the time in milliseconds (12 hex digits, as in a UUIDv7), then 64 random bits.

    Time first so the ledger's and usage records' unique indexes on the id grow at their right
    edge: with random ids each commit dirtied a leaf page per row per index, and those inserts cost
    the ledger's writer 3-4 times the CPU of time-ordered ones (docs/benchmarks.md, "Request ids in
    time order, rows in one INSERT").
    """
    return f"req_{time.time_ns() // 1_000_000:012x}{random.getrandbits(64):016x}"


def tool_call_id() -> str:
    return "call_" + random_hex(12)


def now() -> int:
    return int(time.time())
