"""Stopping a real gateway process with SIGTERM while streams are running: readiness fails at once
while the port still answers (the drain period), a stream that fits in the shutdown timeout ends
whole, one that does not is cut, and the cut one is billed for the tokens it produced."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from gatewright.store.db import create_engine
from tests.platform.audit import assert_consistent, wait_settled
from tests.platform.conftest import IN_CREDITS, OUT_CREDITS, UNLIMITED, fake_prompt_tokens, sqlite_url
from tests.support.app import FAKE_CATALOG
from tests.support.procs import start_gateway

START = 2_000_000
SHORT = " ".join(f"w{i}" for i in range(12))  # fake-slower: 0.1 s a word, so ~1.2 s
LONG = " ".join(f"w{i}" for i in range(60))  # fake-crawl: 0.2 s a word, ~12 s: far longer than drain + timeout
CRAWL = """
[[models]]
id = "fake-crawl"
context_window = 4096
max_output = 64
prices = { input = 1.0, cached_input = 0.5, output = 2.0 }
deployments = [{ name = "fake-crawl", backend = "fake", max_retries = 0, options = { delay = 0.2 } }]
"""


async def _stream(
    client: httpx.AsyncClient, model: str, text: str, started: asyncio.Event
) -> tuple[str, list[str], bool]:
    """(request id, the words received, whether the stream ended with [DONE])."""
    body = {"model": model, "messages": [{"role": "user", "content": text}], "stream": True}
    words: list[str] = []
    done = False
    async with client.stream("POST", "/v1/chat/completions", json=body) as answer:
        assert answer.status_code == 200
        rid = answer.headers["x-request-id"]
        try:
            async for line in answer.aiter_lines():
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: ") and '"content":"' in line:
                    word = line.split('"content":"', 1)[1].split('"', 1)[0].strip()
                    if word:  # the first chunk carries the role and empty content
                        words.append(word)
                        started.set()
        except httpx.HTTPError:
            pass  # cut by the server
    return rid, words, done


async def test_sigterm_drains_then_cuts_and_bills_what_was_produced(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(FAKE_CATALOG.read_text() + CRAWL)
    env = {
        **UNLIMITED,
        "GATEWRIGHT_STARTING_CREDITS": str(START),
        "GATEWRIGHT_DRAIN_SECONDS": "2.5",
        "GATEWRIGHT_SHUTDOWN_TIMEOUT": "2.5",
        "GATEWRIGHT_DATABSE_URL": "postgresql://gw:secret@db/gw",  # a typo: warned about, not silent
    }
    gateway = start_gateway(tmp_path / "gw", catalog=catalog, env=env)
    try:
        headers = {"authorization": f"Bearer {gateway.api_key}"}
        async with httpx.AsyncClient(base_url=gateway.url, headers=headers, timeout=30) as client:
            long_started, short_started = asyncio.Event(), asyncio.Event()
            long = asyncio.create_task(_stream(client, "fake-crawl", LONG, long_started))
            await long_started.wait()
            short = asyncio.create_task(_stream(client, "fake-slower", SHORT, short_started))
            await short_started.wait()
            gateway.process.send_signal(signal.SIGTERM)
            # The signal lands when the process next runs (later on a loaded machine): ask until it
            # has, within the drain (2.5 s), each time on a new connection.
            deadline = asyncio.get_running_loop().time() + 2.0
            while True:
                async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as fresh:
                    ready = await fresh.get("/health/ready")
                    live = await fresh.get("/health/live")
                if ready.status_code != 200 or asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.05)
            assert ready.status_code == 503 and ready.json()["checks"]["draining"]["ok"] is False, ready.text
            assert live.status_code == 200
            short_rid, short_words, short_done = await short
            long_rid, long_words, long_done = await long
        assert short_done and short_words == SHORT.split(), "a stream that fits in the timeout ends whole"
        assert not long_done and 0 < len(long_words) < 60, "a stream longer than the timeout is cut"
        assert gateway.process.wait(timeout=30) in (0, -signal.SIGTERM), gateway.log()
    finally:
        gateway.stop()
        if gateway.process.poll() is None:  # pragma: no cover
            gateway.process.kill()
    log = gateway.log()
    assert "Traceback" not in log, log
    assert "unknown setting GATEWRIGHT_DATABSE_URL is ignored (did you mean GATEWRIGHT_DATABASE_URL?)" in log
    assert f"store sqlite+aiosqlite:///{gateway.data_dir.resolve()}/gatewright.db" in log and "secret" not in log
    engine: AsyncEngine = create_engine(sqlite_url(gateway))
    try:
        result = await wait_settled(engine, account_id=1, within=5)
    finally:
        await engine.dispose()
    assert_consistent(result, START)
    short_row, long_row = result.usage[short_rid], result.usage[long_rid]
    assert short_row.status == "ok" and short_row.output_tokens == 12
    # The cut stream: billed for what was generated (at least what reached the client), not more.
    assert long_row.status == "aborted" and len(long_words) <= long_row.output_tokens < 60
    prompt = fake_prompt_tokens(LONG)
    assert long_row.credits == prompt * IN_CREDITS + long_row.output_tokens * OUT_CREDITS
