"""The ledger's SQLite commits leave WAL checkpoints to ``WalCheckpointer``: the log must still stay
bounded under writes that never pause, and nothing written may be lost."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from gatewright.store.db import WalCheckpointer

ROW = "x" * 2000  # about half a page per row


def _writer(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")  # as the ledger's connection
    conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, body TEXT)")
    return conn


def _write_for(conn: sqlite3.Connection, seconds: float) -> int:
    written, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO t (body) VALUES (?)", [(ROW,)] * 4)
        conn.execute("COMMIT")
        written += 4
        time.sleep(0.0002)  # the ledger's writer waits on its event loop between commits
    return written


def test_the_log_stays_bounded_under_steady_writes(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    conn = _writer(path)
    checkpointer = WalCheckpointer(str(path), interval=0.02, restart_bytes=1 << 20)
    checkpointer.start()
    try:
        written = _write_for(conn, 1.5)
    finally:
        checkpointer.stop()
    wal = (tmp_path / "store.db-wal").stat().st_size
    assert written * len(ROW) > 8 << 20, "enough was written for the bound to mean something"
    assert wal < 4 << 20, f"the log grew to {wal} bytes"
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (written,)
    conn.close()
    reopened = sqlite3.connect(path)
    assert reopened.execute("SELECT count(*) FROM t").fetchone() == (written,)
    reopened.close()


def test_without_it_the_same_writes_grow_the_log(tmp_path: Path) -> None:
    # The control: what the bound above protects against.
    conn = _writer(tmp_path / "store.db")
    written = _write_for(conn, 0.5)
    assert (tmp_path / "store.db-wal").stat().st_size > min(written * len(ROW) // 2, 4 << 20)
    conn.close()
