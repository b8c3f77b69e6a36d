"""Configuration that explains itself: a bad setting is one readable line and exit code 2, never a
traceback; unknown GATEWRIGHT_* variables are named with the setting they probably meant;
`config check`, `--version`, and `db upgrade` run by several processes at once (replicas starting
together) on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gatewright.cli import app
from gatewright.settings import LOG_HANDLER
from tests.support.services import Postgres


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in [n for n in os.environ if n.startswith(("GATEWRIGHT_", "OTEL_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("GATEWRIGHT_DATA_DIR", str(tmp_path))
    return tmp_path


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_bad_values_are_one_line_each_without_traceback(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWRIGHT_PORT", "eighty")
    monkeypatch.setenv("GATEWRIGHT_DATABASE_URL", "mysql://db/gatewright")
    code, out, err = cli("serve")
    assert code == 2 and "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 2, err
    assert lines[0].startswith("error: GATEWRIGHT_PORT='eighty': ") and "integer" in lines[0]
    assert "GATEWRIGHT_DATABASE_URL='mysql://db/gatewright'" in lines[1] and "postgresql://" in lines[1]
    code, _, err = cli("serve", "--log-level", "loud")
    assert code == 2 and "--log-level='loud'" in err and "'debug', 'info'" in err
    monkeypatch.delenv("GATEWRIGHT_PORT")
    monkeypatch.delenv("GATEWRIGHT_DATABASE_URL")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    code, _, err = cli("serve")
    assert code == 2 and len(err.strip().splitlines()) == 2, err
    assert "OTEL_EXPORTER_OTLP_PROTOCOL='grpc': allowed: http/protobuf" in err and "http:// or https://" in err
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_PROTOCOL")
    monkeypatch.setenv("GATEWRIGHT_DATABASE_URL", "postgresql://gw:hunter2@127.0.0.1:1/gw")  # nothing listens
    try:
        code, _, err = cli("serve")
    finally:  # serve installed its log handler on the root logger of this test process
        root = logging.getLogger()
        root.handlers[:] = [h for h in root.handlers if h.get_name() != LOG_HANDLER]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 1 and "Traceback" not in err, err
    assert "the store postgresql+asyncpg://gw:***@127.0.0.1:1/gw cannot be opened" in err and "hunter2" not in err


def test_config_check(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = cli("config", "check")
    assert code == 0 and out.rstrip().endswith("ok") and not err, out + err
    # A typo in the database URL's name would leave this replica on its own SQLite file.
    monkeypatch.setenv("GATEWRIGHT_DATABSE_URL", "postgresql://gw:secret@db/gatewright")
    code, out, err = cli("config", "check")
    assert code == 1 and "GATEWRIGHT_DATABSE_URL" in err and "did you mean GATEWRIGHT_DATABASE_URL?" in err
    monkeypatch.delenv("GATEWRIGHT_DATABSE_URL")
    bad = env / "bad.toml"
    bad.write_text('[[models]]\nid = "x"\n')
    monkeypatch.setenv("GATEWRIGHT_CATALOG", str(bad))
    code, out, err = cli("config", "check")
    assert code == 1 and "error: catalog" in err and "Traceback" not in err
    monkeypatch.delenv("GATEWRIGHT_CATALOG")
    code, out, err = cli("config", "check", "--store")  # a store nobody migrated yet
    assert code == 1 and "gatewright db upgrade" in err


def test_version() -> None:
    code, out, _ = cli("--version")
    assert code == 0 and out.startswith("gatewright 0.")


def _upgrade_together(url: str, tmp_path: Path, processes: int = 3) -> None:
    env = {**os.environ, "GATEWRIGHT_DATABASE_URL": url, "GATEWRIGHT_DATA_DIR": str(tmp_path)}
    started = [
        subprocess.Popen(
            [sys.executable, "-m", "gatewright", "db", "upgrade"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(processes)
    ]
    outputs = [p.communicate(timeout=120)[0] for p in started]
    assert [p.returncode for p in started] == [0] * processes, outputs
    done = subprocess.run(
        [sys.executable, "-m", "gatewright", "db", "current"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "schema at" in done.stdout, done.stdout + done.stderr


def test_replicas_migrating_at_once_sqlite(tmp_path: Path) -> None:
    _upgrade_together(f"sqlite:///{tmp_path / 'shared.db'}", tmp_path)


@pytest.mark.postgres
def test_replicas_migrating_at_once_postgres(postgres: Postgres, tmp_path: Path) -> None:
    _upgrade_together(postgres.create_database(), tmp_path)
