"""Upstream providers under test: real gateway processes whose catalogs point at (a) the faulty
loopback server, scripted per test, and (b) a real ``llama_cpp.server`` process serving the local
GGUF. Billing is checked in the gateway's own SQLite store."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support.app import AppGateway, app_gateway
from tests.support.catalogs import catalog_toml, toml_value  # noqa: F401  (re-exported for the tests here)
from tests.support.faulty_upstream import FaultyUpstream, running_faulty_upstream
from tests.support.llama_server import LLAMA_PRICES  # noqa: F401  (re-exported)
from tests.support.procs import Gateway, journaled

PRICES = {"input": 1.0, "output": 2.0}
BACKUP_PRICES = {"input": 3.0, "output": 5.0}
UPSTREAM_KEY = "sk-upstream-test-key"
# Long enough that a slow, busy machine still sends the next requests inside it.
BREAKER_COOLDOWN = 8.0  # long enough that the five calls made while it is open fit in it on a busy machine


def model(model_id: str, prices: dict[str, float] = PRICES, **fields: Any) -> dict[str, Any]:
    return {"id": model_id, "context_window": 4096, "max_output": 512, "prices": prices, **fields}


@dataclass
class Store:
    """Read-only view of a gateway's SQLite store: what was charged, and the usage rows."""

    path: Path

    def _query(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        with sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10) as db:
            db.row_factory = sqlite3.Row
            return list(db.execute(sql, args))

    def settled(self, timeout: float = 60.0) -> None:
        """Wait until no request holds credits and the gateway's settlement journal holds no charge
        it has not committed: settlements commit after the response is sent."""
        deadline = time.monotonic() + timeout
        while self._query("SELECT 1 FROM holds WHERE status = 'held' LIMIT 1") or journaled(self.path.parent):
            if time.monotonic() > deadline:
                raise AssertionError("holds still open")
            time.sleep(0.05)

    def balance(self) -> int:
        """The account's balance once every request so far is settled."""
        self.settled()
        return int(self._query("SELECT balance FROM accounts ORDER BY id LIMIT 1")[0]["balance"])

    def reserved(self) -> int:
        """Credits the account holds for requests beyond what credit leases hold: with leases a
        request's reservation lives in its gateway's memory, inside the lease (tests/platform/test_leases.py)."""
        self.settled()
        reserved = int(self._query("SELECT reserved FROM accounts ORDER BY id LIMIT 1")[0]["reserved"])
        leased = self._query(
            "SELECT coalesce(sum(credits), 0) AS held FROM leases WHERE status = 'held' "
            "AND account_id = (SELECT min(id) FROM accounts)"
        )[0]["held"]
        return reserved - int(leased)

    def usage(self, request_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """The usage row of a request, waiting for the ledger's writer to commit it."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self._query("SELECT * FROM usage_records WHERE request_id = ?", request_id)
            if rows:
                return dict(rows[0])
            if time.monotonic() > deadline:
                raise AssertionError(f"no usage record for {request_id}")
            time.sleep(0.05)

    def charges(self, request_id: str) -> list[int]:
        self.settled()
        return [int(r["credits"]) for r in self._query("SELECT credits FROM ledger WHERE request_id = ?", request_id)]


@pytest.fixture(scope="session")
def faulty() -> Iterator[FaultyUpstream]:
    with running_faulty_upstream() as server:
        yield server


def fault_catalog(up: FaultyUpstream) -> list[dict[str, Any]]:
    def openai_at(route: str, **extra: Any) -> dict[str, Any]:
        return {"backend": "openai", "base_url": up.base_url(route), "upstream_model": f"{route}-model", **extra}

    def deployment(route: str, **extra: Any) -> dict[str, Any]:
        return {"name": route, **openai_at(route), "max_retries": 0, **extra}

    return [
        model("retry-ok", **openai_at("retry-ok", max_retries=2)),
        model("rate-limited", **openai_at("rate-limited", max_retries=1)),
        model("hang", fallbacks=["backup"], **openai_at("hang", timeout=0.5, max_retries=0)),
        model("resets", **openai_at("resets", max_retries=1)),
        model("fails-over", fallbacks=["backup"], **openai_at("fails-over", max_retries=1)),
        model("always-fails", **openai_at("always-fails", max_retries=1, breaker_failures=100)),
        model("oversized", **openai_at("oversized", max_retries=0, max_answer_bytes=65536)),
        model("tiny-window", context_window=64, max_output=16, **openai_at("tiny-window")),
        model("rejects", **openai_at("rejects")),
        model("no-usage", **openai_at("no-usage")),
        model("metered", **openai_at("metered", max_retries=0)),  # test_hard_limits
        model("backup", prices=BACKUP_PRICES, **openai_at("backup")),
        model(
            "breaker",
            routing="least-busy",
            deployments=[
                deployment("breaker-a", breaker_failures=1, breaker_cooldown=BREAKER_COOLDOWN),
                deployment("breaker-b", breaker_failures=1, breaker_cooldown=BREAKER_COOLDOWN),
            ],
        ),
        model("weighted", deployments=[deployment("heavy", weight=3.0), deployment("light", weight=1.0)]),
        model("least-busy", routing="least-busy", deployments=[deployment("busy-a"), deployment("busy-b")]),
        model("keyed", **openai_at("keyed", api_key_env="GW_TEST_UPSTREAM_KEY")),
        model("unkeyed", **openai_at("unkeyed", api_key_env="GW_TEST_UNSET_UPSTREAM_KEY")),
        model(
            "anthropic-flaky",
            capabilities={"tools": True, "reasoning": True},
            backend="anthropic",
            base_url=up.base_url("anthropic-flaky"),
            upstream_model="claude-test",
            max_retries=1,
            api_key_env="GW_TEST_UPSTREAM_KEY",
        ),
    ]


@pytest.fixture(scope="session")
def fault_gateway(tmp_path_factory: pytest.TempPathFactory, faulty: FaultyUpstream) -> Iterator[AppGateway]:
    """The gateway in process in front of the scripted faulty upstream (a real loopback server)."""
    data_dir = tmp_path_factory.mktemp("fault-gateway")
    catalog = data_dir / "catalog.toml"
    catalog.write_text(catalog_toml(fault_catalog(faulty)))
    # The catalog reads upstream keys from the environment (api_key_env), as `serve` would.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GW_TEST_UPSTREAM_KEY", UPSTREAM_KEY)
        with app_gateway(data_dir, catalog=catalog, default_requests_per_minute=100_000) as gw:
            yield gw


@pytest.fixture(scope="session")
def fault_client(fault_gateway: AppGateway) -> openai.OpenAI:
    return fault_gateway.openai()


@pytest.fixture(scope="session")
def fault_store(fault_gateway: AppGateway) -> Store:
    return Store(fault_gateway.data_dir / "gatewright.db")


@pytest.fixture(scope="session")
def llama_client(llama_gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{llama_gateway.url}/v1", api_key=llama_gateway.api_key, max_retries=0, timeout=300)


@pytest.fixture(scope="session")
def llama_store(llama_gateway: Gateway) -> Store:
    return Store(llama_gateway.data_dir / "gatewright.db")
