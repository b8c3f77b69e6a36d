"""JSON lines (GATEWRIGHT_LOG_FORMAT=json): one access record per request through `logging` with what
it turned out to be (account, key prefix, model, deployment, status, tokens, credits, latency),
never the key or the prompt; other log records in the same shape."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from pathlib import Path

from starlette.testclient import TestClient

from gatewright.app import create_app
from gatewright.core.keys import key_prefix
from gatewright.logs import JsonFormatter
from gatewright.settings import Settings
from gatewright.wiring import bootstrap
from tests.platform.conftest import IN_CREDITS, OUT_CREDITS, fake_prompt_tokens

PROMPT = "secret words of the prompt"


def test_json_access_lines(tmp_path: Path, fake_catalog: Path) -> None:
    settings = Settings(data_dir=tmp_path, catalog=fake_catalog, log_format="json")
    first = asyncio.run(bootstrap(settings))
    assert first is not None
    key = first.api_key.key
    app = create_app(settings)
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)  # what configure_logging installs for json, on a buffer
    handler.setFormatter(JsonFormatter())
    access = logging.getLogger("gatewright.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    body = {"model": "fake-alias", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 3}
    with TestClient(app) as http:
        answer = http.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"})
        assert answer.status_code == 200
        refused = http.post("/v1/chat/completions", json=body, headers={"authorization": "Bearer wrong"})
        assert refused.status_code == 401
        http.get("/health/live")
    access.removeHandler(handler)
    records = [json.loads(line) for line in lines.getvalue().splitlines()]
    assert [(r["method"], r["path"], r["status"]) for r in records] == [
        ("POST", "/v1/chat/completions", 200),
        ("POST", "/v1/chat/completions", 401),
        ("GET", "/health/live", 200),
    ]
    ok = records[0]
    prompt_tokens = fake_prompt_tokens(PROMPT)
    assert ok | {"time": None, "latency_ms": None} == {
        "time": None,
        "latency_ms": None,
        "level": "info",
        "logger": "gatewright.access",
        "message": "POST /v1/chat/completions 200",
        "request_id": answer.headers["x-request-id"],
        "method": "POST",
        "path": "/v1/chat/completions",
        "status": 200,
        "account_id": 1,
        "key_prefix": key_prefix(key),
        "model": "fake",
        "deployment": "fake",
        "input_tokens": prompt_tokens,
        "output_tokens": 3,
        "credits": prompt_tokens * IN_CREDITS + 3 * OUT_CREDITS,
        "outcome": "ok",
    }
    assert ok["latency_ms"] > 0
    text = lines.getvalue()
    assert key not in text and "secret" not in text and "wrong" not in text


def test_json_formatter_for_other_records() -> None:
    record = logging.LogRecord("gatewright.ledger", logging.WARNING, __file__, 1, "commit took %d ms", (12,), None)
    record.request_id = "req_1"
    line = json.loads(JsonFormatter().format(record))
    assert line | {"time": None} == {
        "time": None,
        "level": "warning",
        "logger": "gatewright.ledger",
        "message": "commit took 12 ms",
        "request_id": "req_1",
    }
