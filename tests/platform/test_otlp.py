"""Traces leave a real gateway process over OTLP/HTTP and reach a receiver process on loopback,
configured with nothing but the standard OTEL_* variables; the embedded engine (the real model)
reports its queue wait, prefill and decode as children of the request's span (and readiness says
the model is loaded, /metrics shows its engine's queue)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.procs import free_port, running_gateway

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
MODEL = "qwen2.5-coder-0.5b-instruct"


def _spans(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def test_spans_reach_an_otlp_receiver(tmp_path: Path) -> None:
    port, out = free_port(), tmp_path / "spans.jsonl"
    receiver = subprocess.Popen([sys.executable, "-m", "tests.support.otlp_receiver", str(port), str(out)])
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_SERVICE_NAME": "gatewright-under-test",
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # ms: export soon after the request
    }
    try:
        with running_gateway(tmp_path / "gw", env=env) as gateway:
            headers = {"authorization": f"Bearer {gateway.api_key}", "traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-01"}
            body = {"model": MODEL, "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 4}
            answer = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=headers, timeout=120)
            assert answer.status_code == 200, answer.text
            ready = httpx.get(f"{gateway.url}/health/ready", timeout=10).json()
            assert ready["checks"]["models_loaded"] == {"ok": True, "detail": "all loaded"}, ready
            scraped = httpx.get(f"{gateway.url}/metrics", timeout=10).text
            for gauge in ("gatewright_engine_queue_depth", "gatewright_engine_active_sequences"):
                assert f'{gauge}{{deployment="{MODEL}"}} 0.0' in scraped, scraped  # the engine is idle again
            # The settlement ends before the answer does (settle first), so the request's span can
            # come in the next export: wait for both.
            wanted = {"gatewright.settle", "POST /v1/chat/completions"}
            deadline = time.monotonic() + 60
            while not wanted <= {s["name"] for s in _spans(out)}:
                assert time.monotonic() < deadline, f"no spans arrived: {_spans(out)}\n{gateway.log()}"
                time.sleep(0.2)
    finally:
        receiver.terminate()
        receiver.wait(10)
    spans = [s for s in _spans(out) if s["trace_id"] == TRACE_ID]
    (request,) = [s for s in spans if s["name"] == "POST /v1/chat/completions"]
    assert request["parent_span_id"] == CALLER_SPAN
    assert request["resource"]["service.name"] == "gatewright-under-test"
    assert request["attributes"]["gen_ai.request.model"] == MODEL
    assert request["attributes"]["gen_ai.usage.output_tokens"] == answer.json()["usage"]["completion_tokens"]
    children = {s["name"]: s for s in spans if s["parent_span_id"] == request["span_id"]}
    engine = ("gatewright.engine.queue_wait", "gatewright.engine.prefill", "gatewright.engine.decode")
    assert {"gatewright.reserve", f"chat {MODEL}", *engine, "gatewright.settle"} <= set(children), sorted(children)
    queue, prefill, decode = (children[name] for name in engine)
    assert queue["end"] <= prefill["start"] + 1_000_000 and prefill["end"] <= decode["start"] + 1_000_000
    assert prefill["attributes"]["gen_ai.usage.input_tokens"] > 0
    assert decode["attributes"]["gen_ai.usage.output_tokens"] == request["attributes"]["gen_ai.usage.output_tokens"]
