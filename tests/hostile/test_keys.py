"""Keys people can protect: kinds told apart by their marker, old keys still valid, and the first
start's keys printed only to a terminal (otherwise written once to an owner-only file)."""

from __future__ import annotations

import asyncio
import re
import secrets
import stat
from pathlib import Path

import pytest
from sqlalchemy import update

from gatewright.cli.serve import KEYS_FILE, _banner, _exposure_warning
from gatewright.core.keys import hash_key, key_prefix
from gatewright.settings import Settings
from gatewright.store.db import create_engine
from gatewright.store.tables import api_keys
from tests.hostile.conftest import CATALOG, InProcess, in_process
from tests.support.procs import running_gateway


def test_new_keys_say_what_they_are(gw: InProcess) -> None:
    assert re.fullmatch(r"gw-[0-9a-f]{32}", gw.api_key)
    assert re.fullmatch(r"gwm-[0-9a-f]{32}", gw.management_key)
    made = gw.client.post("/v1/keys", json={}, headers=gw.headers(["managementKey"])).json()["data"]
    assert re.fullmatch(r"gw-[0-9a-f]{32}", made["key"]) and made["prefix"] == key_prefix(made["key"])
    chat = {"model": "local", "messages": [{"role": "user", "content": "hi"}]}
    answer = gw.client.post("/v1/chat/completions", json=chat, headers={"authorization": f"Bearer {made['key']}"})
    assert answer.status_code == 200, answer.text
    patched = gw.client.patch(f"/v1/keys/{made['prefix']}", json={"name": "x"}, headers=gw.headers(["managementKey"]))
    assert patched.status_code == 200, patched.text


def test_a_key_made_before_markers_keeps_working(tmp_path: Path) -> None:
    """A store from before this change holds bare 32-hex keys: they authenticate as before."""
    legacy = secrets.token_hex(16)
    with in_process(tmp_path) as gw:
        settings = Settings(data_dir=tmp_path)

        async def make_legacy() -> None:
            engine = create_engine(settings.db_url)
            async with engine.begin() as conn:
                await conn.execute(
                    update(api_keys)
                    .where(api_keys.c.prefix == key_prefix(gw.api_key))
                    .values(key_hash=hash_key(legacy), prefix=legacy[:8])
                )
            await engine.dispose()

        asyncio.run(make_legacy())
        chat = {"model": "local", "messages": [{"role": "user", "content": "hi"}]}
        answer = gw.client.post("/v1/chat/completions", json=chat, headers={"authorization": f"Bearer {legacy}"})
        assert answer.status_code == 200, answer.text
        listed = gw.client.get("/v1/keys", headers=gw.headers(["managementKey"])).json()["data"]
        assert legacy[:8] in [k["prefix"] for k in listed]


def test_first_start_without_a_terminal_writes_the_keys_to_an_owner_only_file(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(CATALOG)
    with running_gateway(tmp_path / "data", catalog=catalog) as gw:
        log = gw.log()
        path = tmp_path / "data" / KEYS_FILE
        assert gw.api_key and gw.management_key, log
        assert gw.api_key not in log and gw.management_key not in log
        assert str(path.resolve()) in log  # the log says where they are
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert gw.api_key.startswith("gw-") and gw.management_key.startswith("gwm-")


def test_first_start_on_a_terminal_prints_the_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    text = _banner(Settings(data_dir=tmp_path), "gw-" + "a" * 32, "gwm-" + "b" * 32, "gwo-" + "c" * 32)
    assert "gw-" + "a" * 32 in text and "gwm-" + "b" * 32 in text and "gwo-" + "c" * 32 in text
    assert not (tmp_path / KEYS_FILE).exists()


def test_bare_on_a_public_address_warns_loudly() -> None:
    warning = _exposure_warning(Settings(platform=False, host="0.0.0.0"))
    assert warning and "WARNING" in warning and "0.0.0.0" in warning
    assert _exposure_warning(Settings(platform=False, host="127.0.0.1")) is None
    assert _exposure_warning(Settings(platform=False, host="::1")) is None
    assert _exposure_warning(Settings(platform=True, host="0.0.0.0")) is None
