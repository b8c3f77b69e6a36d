"""Reading a gateway's SQLite store from a test (the gateway keeps running: WAL allows readers)."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from tests.support.app import AppGateway
from tests.support.procs import Gateway


def query(gw: Gateway | AppGateway | Path, sql: str, *args: Any) -> list[sqlite3.Row]:
    data_dir = gw if isinstance(gw, Path) else gw.data_dir
    with sqlite3.connect(f"file:{data_dir / 'gatewright.db'}?mode=ro", uri=True, timeout=30) as conn:
        conn.row_factory = sqlite3.Row
        return list(conn.execute(sql, args))


def task_row(gw: Gateway | AppGateway | Path, task_uuid: str) -> dict[str, Any]:
    rows = query(gw, "SELECT * FROM tasks WHERE task_uuid = ?", task_uuid.lower())
    assert len(rows) == 1, f"no row for task {task_uuid}"
    row = dict(rows[0])
    for key in ("request", "results", "webhook_attempts"):
        row[key] = json.loads(row[key])
    return row


def usage_of(gw: Gateway | AppGateway | Path, task_uuid: str) -> list[sqlite3.Row]:
    """The usage records of every run of every result of a task (request ids task_<uuid>_<i>_<run>)."""
    return query(
        gw, "SELECT * FROM usage_records WHERE request_id LIKE ? ORDER BY request_id", f"task_{task_uuid.lower()}_%"
    )


def charges_of(gw: Gateway | AppGateway | Path, task_uuid: str) -> list[sqlite3.Row]:
    return query(
        gw,
        "SELECT * FROM ledger WHERE kind = 'charge' AND request_id LIKE ? ORDER BY request_id",
        f"task_{task_uuid.lower()}_%",
    )


def billed(gw: Gateway | AppGateway | Path, task_uuid: str, runs: int, timeout: float = 60.0) -> list[sqlite3.Row]:
    """The task's usage records once ``runs`` of them are written: the ledger commits a settlement
    right after the answer, not before it."""
    deadline = time.monotonic() + timeout
    rows = usage_of(gw, task_uuid)
    while len(rows) < runs and time.monotonic() < deadline:
        time.sleep(0.02)
        rows = usage_of(gw, task_uuid)
    return rows
