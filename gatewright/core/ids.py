"""Identifiers: random, URL-safe, cheap to make on the hot path."""

from __future__ import annotations

import os
import time


def random_hex(nbytes: int = 12) -> str:
    return os.urandom(nbytes).hex()


def request_id() -> str:
    """``req_``, the time in milliseconds (12 hex digits, as in a UUIDv7), then 64 random bits.

    Time first so the ledger's and usage records' unique indexes on the id grow at their right
    edge: with random ids each commit dirtied a leaf page per row per index, and those inserts
    cost the ledger's writer 3-4 times the CPU of time-ordered ones (docs/benchmarks.md, "Request
    ids in time order").
    """
    return f"req_{time.time_ns() // 1_000_000:012x}{random_hex(8)}"


def tool_call_id() -> str:
    return "call_" + random_hex(12)


def now() -> int:
    return int(time.time())
