"""Identifiers: random, URL-safe, cheap to make on the hot path."""

from __future__ import annotations

import os
import time


def random_hex(nbytes: int = 12) -> str:
    return os.urandom(nbytes).hex()


def request_id() -> str:
    return "req_" + random_hex(12)


def tool_call_id() -> str:
    return "call_" + random_hex(12)


def now() -> int:
    return int(time.time())
