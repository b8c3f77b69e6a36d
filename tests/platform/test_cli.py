"""`gatewright keys | credits | usage` on a real SQLite store, and against a running gateway:
a key made by the CLI works at once, credits added by the CLI show in the billing API."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from gatewright.cli import app
from gatewright.core.accounts import Accounts
from gatewright.core.keys import Authenticator, key_prefix
from gatewright.core.platform import Settlement
from gatewright.core.types import Cost, Usage
from gatewright.settings import Settings
from gatewright.store.keys import SqlKeyStore
from gatewright.wiring import bootstrap, ledger_writer, open_accounts
from tests.platform.wire import auth, chat_body
from tests.support.app import AppGateway

KEY = re.compile(r"^(gw-[0-9a-f]{32})$", re.MULTILINE)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GATEWRIGHT_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("GATEWRIGHT_DATABASE_URL", raising=False)
    monkeypatch.setenv("COLUMNS", "200")  # rich tables at full width
    return tmp_path


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def _on_store(action: object) -> object:
    async def go() -> object:
        async with open_accounts(Settings()) as accounts:
            return await action(accounts)  # type: ignore[operator]

    return asyncio.run(go())


def test_an_empty_store_says_how_to_get_an_account(data_dir: Path) -> None:
    code, out = cli("keys", "list")
    assert code == 1 and "no account yet" in out and "gatewright serve" in out


def test_keys_create_list_disable_enable_delete(data_dir: Path) -> None:
    asyncio.run(bootstrap(Settings()))
    code, out = cli(
        "keys", "create", "--name", "ci", "--limit-usd", "2.5", "--retention", "week", "--rpm", "30",
        "--scope", "model:chat", "--scope", "model:tasks",
    )  # fmt: skip
    assert code == 0, out
    key = KEY.search(out)
    assert key is not None and "shown" not in key.group(1)
    prefix = key_prefix(key.group(1))
    assert "5,000,000 (2.50 USD) / week" in out and "30 req" in out

    async def check(accounts: Accounts) -> None:
        principal = await Authenticator(SqlKeyStore(accounts.store.engine)).authenticate(key.group(1))
        assert principal.prefix == prefix and principal.requests_per_minute == 30
        assert principal.scopes == frozenset({"model:chat", "model:tasks"})

    _on_store(check)
    code, out = cli("keys", "list")
    assert code == 0 and prefix in out and "ci" in out and "management" in out
    assert cli("keys", "disable", prefix)[0] == 0
    assert _on_store(lambda accounts: accounts.key(prefix)).disabled is True  # type: ignore[attr-defined]
    assert cli("keys", "enable", prefix)[0] == 0
    assert _on_store(lambda accounts: accounts.key(prefix)).disabled is False  # type: ignore[attr-defined]
    code, out = cli("keys", "delete", prefix)
    assert code == 0 and f"deleted key {prefix}" in out
    assert prefix not in cli("keys", "list")[1]
    code, out = cli("keys", "disable", prefix)
    assert code == 1 and f"No API key with prefix '{prefix}'" in out


def test_key_options_are_checked(data_dir: Path) -> None:
    asyncio.run(bootstrap(Settings()))
    code, out = cli("keys", "create", "--limit-usd", "1", "--retention", "fortnight")
    assert code == 1 and "limit.retention" in out
    code, out = cli("keys", "create", "--scope", "model:everything")
    assert code == 1 and "Unknown scope" in out
    code, _ = cli("keys", "create", "--rpm", "0")
    assert code == 2  # typer's own range check


def test_credits_add_and_show(data_dir: Path) -> None:
    asyncio.run(bootstrap(Settings(starting_credits=1_000)))
    code, out = cli("credits", "add", "5000", "--note", "invoice 9")
    assert code == 0 and "added 5,000" in out and "6,000" in out
    code, out = cli("credits", "add", "0.5", "--usd")
    assert code == 0 and "added 1,000,000 (0.50 USD)" in out
    assert cli("credits", "add", "1.5")[0] == 2  # credits are whole numbers
    code, out = cli("credits", "add", "--", "-99999999")
    assert code == 1 and "Cannot remove" in out
    code, out = cli("credits", "show", "--entries", "5")
    assert code == 0 and "1,006,000" in out and "invoice 9" in out and "+5,000" in out
    balance = _on_store(lambda accounts: accounts.account(1)).balance  # type: ignore[attr-defined]
    assert balance == 1_006_000


def test_usage_lists_requests_and_totals(data_dir: Path) -> None:
    first = asyncio.run(bootstrap(Settings()))
    assert first is not None

    async def spend(accounts: Accounts) -> None:
        ledger = ledger_writer(accounts.store.engine, owner="cli-test")
        await ledger.start()
        other = await accounts.create_key(first.account_id, "api", name="other")
        try:
            for i, row in enumerate([first.api_key.row, first.api_key.row, other.row]):
                from gatewright.core.keys import principal_of

                hold = await ledger.reserve(principal_of(row), 500, f"req-{i}", "fake")
                await ledger.settle(
                    Settlement(hold, Usage(input_tokens=10, output_tokens=i + 1), Cost(100 + i, 0), "ok", "fake")
                )
        finally:
            await ledger.close()

    _on_store(spend)
    prefix = first.api_key.row.prefix
    code, out = cli("usage", "--key", prefix)
    assert code == 0, out
    assert "2 of 2 requests" in out and out.count(prefix) == 2 and "201" in out  # 100 + 101 credits
    code, out = cli("usage", "--limit", "1")
    assert code == 0 and "1 of 3 requests" in out and "303" in out  # totals cover every match
    assert "0 of 0 requests" in cli("usage", "--model", "other-model")[1]


def test_several_accounts_need_a_choice(data_dir: Path) -> None:
    asyncio.run(bootstrap(Settings()))
    _on_store(lambda accounts: accounts.create_account("second", 10))
    code, out = cli("credits", "show")
    assert code == 1 and "choose one with --account" in out and "2 (second)" in out
    code, out = cli("credits", "show", "--account", "2", "--entries", "0")
    assert code == 0 and "account 2 (second)" in out
    assert cli("credits", "show", "--account", "9")[0] == 1


async def test_the_cli_works_on_a_running_gateways_store(http: httpx.AsyncClient, platform_gateway: AppGateway) -> None:
    env = {"GATEWRIGHT_DATA_DIR": str(platform_gateway.data_dir), "COLUMNS": "200", "PATH": "/usr/bin:/bin"}

    def run(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "gatewright", *args], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    # Account 1 is the one made on first start (other tests may have added accounts to this store).
    made = KEY.search(await asyncio.to_thread(run, "keys", "create", "--name", "from-cli", "--account", "1"))
    assert made is not None
    response = await http.post("/v1/chat/completions", json=chat_body(), headers=auth(made.group(1)))
    assert response.status_code == 200  # a new key needs no restart: it is looked up on first use
    before = (await http.get("/v1/billing/balance", headers=auth(made.group(1)))).json()["balance"]
    await asyncio.to_thread(run, "credits", "add", "12345", "--account", "1")
    after = (await http.get("/v1/billing/balance", headers=auth(made.group(1)))).json()["balance"]
    assert after - before == 12_345
    listed = await asyncio.to_thread(run, "usage", "--key", key_prefix(made.group(1)), "--account", "1")
    assert "1 of 1 requests" in listed


def test_the_operator_commands(data_dir: Path) -> None:
    """accounts create/list/disable/enable/rename/delete, codes mint/list, operator keys."""
    asyncio.run(bootstrap(Settings()))
    code, out = cli("accounts", "create", "team-a", "--email", "a@example.com", "--credits", "5000")
    assert code == 0, out
    assert re.search(r"^gwm-[0-9a-f]{32}$", out, re.M) and "team-a" in out
    code, out = cli("accounts", "list")
    assert code == 0 and "team-a" in out and "a@example.com" in out and "5,000" in out
    assert cli("accounts", "disable", "2")[0] == 0
    assert _on_store(lambda accounts: accounts.account(2)).disabled is True  # type: ignore[attr-defined]
    assert cli("accounts", "enable", "2")[0] == 0 and cli("accounts", "rename", "2", "team-b")[0] == 0
    assert _on_store(lambda accounts: accounts.account(2)).name == "team-b"  # type: ignore[attr-defined]
    code, out = cli("codes", "mint", "1.5", "--usd", "--count", "3", "--expires-in-days", "7")
    assert code == 0 and len(re.findall(r"^gwr-[0-9a-f]{32}$", out, re.M)) == 3, out
    code, out = cli("codes", "list")
    assert code == 0 and out.count("3,000,000") == 3
    code, out = cli("operator", "create-key", "--name", "second")
    made = re.search(r"^gwo-([0-9a-f]{8})[0-9a-f]{24}$", out, re.M)
    assert code == 0 and made, out
    assert made.group(1) in cli("operator", "list")[1]
    assert cli("operator", "delete", made.group(1))[0] == 0
    assert made.group(1) not in cli("operator", "list")[1]
    assert cli("accounts", "delete", "2")[0] == 0
    code, out = cli("accounts", "delete", "2")
    assert code == 1 and "No account 2" in out
