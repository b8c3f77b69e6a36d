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


def _write(conn: sqlite3.Connection, rows: int) -> int:
    # A fixed amount, not a fixed time: a loaded machine writes slower but must still prove the bound.
    written = 0
    while written < rows:
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
        written = _write(conn, 8_000)  # about 16 MB through the log
    finally:
        checkpointer.stop()
    wal = (tmp_path / "store.db-wal").stat().st_size
    assert wal < 8 << 20, f"the log grew to {wal} bytes"  # half of what went through it
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (written,)
    conn.close()
    reopened = sqlite3.connect(path)
    assert reopened.execute("SELECT count(*) FROM t").fetchone() == (written,)
    reopened.close()


def test_without_it_the_same_writes_grow_the_log(tmp_path: Path) -> None:
    # The control: what the bound above protects against.
    conn = _writer(tmp_path / "store.db")
    written = _write(conn, 2_000)
    assert (tmp_path / "store.db-wal").stat().st_size > min(written * len(ROW) // 2, 4 << 20)
    conn.close()
