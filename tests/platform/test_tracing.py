"""OpenTelemetry traces, in process with the SDK's in-memory exporter: a relayed request is one
SERVER span continuing the caller's ``traceparent``, with the GenAI and gatewright attributes, and
children for the reservation, each upstream attempt (the failed one marked) and the settlement; the
upstream receives each attempt's context as its ``traceparent``. And tracing costs nothing when the
OTEL_* variables are unset: the tracing SDK is not even imported."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from starlette.testclient import TestClient

from gatewright import telemetry
from gatewright.app import create_app
from gatewright.core.keys import key_prefix
from gatewright.settings import Settings
from gatewright.wiring import bootstrap
from tests.support.app import FAKE_CATALOG
from tests.support.faulty_upstream import Answer, Fail, FaultyUpstream, running_faulty_upstream

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    stop = telemetry.configure({}, exporter=memory)
    assert stop is not None
    try:
        yield memory
    finally:
        asyncio.run(stop())


@pytest.fixture
def upstream() -> Iterator[FaultyUpstream]:
    with running_faulty_upstream() as server:
        yield server


def _app(tmp_path: Path, upstream: FaultyUpstream) -> tuple[Settings, str]:
    catalog = tmp_path / "catalog.toml"
    relay = f"""
[[models]]
id = "relay"
context_window = 4096
max_output = 64
prices = {{ input = 1.0, cached_input = 0.5, output = 2.0 }}
backend = "openai"
base_url = "{upstream.base_url("relay")}"
upstream_model = "relay-model"
max_retries = 1
"""
    catalog.write_text(FAKE_CATALOG.read_text() + relay)
    settings = Settings(data_dir=tmp_path, catalog=catalog)
    first = asyncio.run(bootstrap(settings))
    assert first is not None
    return settings, first.api_key.key


def test_a_relayed_request_is_one_trace(
    tmp_path: Path, exporter: InMemorySpanExporter, upstream: FaultyUpstream
) -> None:
    settings, key = _app(tmp_path, upstream)
    upstream.script("relay", Fail(500), default=Answer("hello from upstream", prompt_tokens=11))
    headers = {"authorization": f"Bearer {key}", "traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-01"}
    body = {"model": "relay", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
    with TestClient(create_app(settings)) as http:
        answer = http.post("/v1/chat/completions", json=body, headers=headers)
        assert answer.status_code == 200, answer.text
        credits = answer.json()["meta"]["usage"]["credits_used"]
        http.get("/v1/key", headers=headers)  # flushes the ledger: the settlement span has ended
    spans = exporter.get_finished_spans()
    (request,) = [s for s in spans if s.kind == SpanKind.SERVER and s.name == "POST /v1/chat/completions"]
    assert f"{request.context.trace_id:032x}" == TRACE_ID and request.parent is not None
    assert f"{request.parent.span_id:016x}" == CALLER_SPAN, "the caller's traceparent is continued"
    attributes = dict(request.attributes or {})
    assert attributes | {"gatewright.request_id": None} == attributes | {
        "gatewright.request_id": None,
        "http.request.method": "POST",
        "http.response.status_code": 200,
        "gatewright.dialect": "openai",
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "relay",
        "gen_ai.response.model": "relay",
        "gen_ai.request.max_tokens": 16,
        "gen_ai.usage.input_tokens": 11,
        "gen_ai.usage.output_tokens": 3,
        "gatewright.key_prefix": key_prefix(key),
        "gatewright.account_id": 1,
        "gatewright.credits": credits,
        "gatewright.outcome": "ok",
    }
    assert "hi" not in [str(v) for v in attributes.values()] and key not in str(attributes), "no prompt, no key"
    children = [s for s in spans if s.parent is not None and s.parent.span_id == request.context.span_id]
    by_name: dict[str, list[ReadableSpan]] = {}
    for child in sorted(children, key=lambda s: s.start_time or 0):
        by_name.setdefault(child.name, []).append(child)
    assert set(by_name) == {"gatewright.reserve", "chat relay", "gatewright.settle"}
    failed, answered = by_name["chat relay"]
    assert failed.kind == answered.kind == SpanKind.CLIENT
    assert failed.status.status_code == StatusCode.ERROR and (failed.attributes or {})["error.type"] == "500"
    assert answered.status.status_code != StatusCode.ERROR
    assert [(s.attributes or {})["gatewright.attempt"] for s in (failed, answered)] == [0, 1]
    assert (answered.attributes or {})["gen_ai.provider.name"] == "openai"
    assert (by_name["gatewright.settle"][0].attributes or {})["gatewright.credits"] == credits
    # Each attempt reached the upstream carrying its own span as the parent.
    sent = [seen.headers["traceparent"] for seen in upstream.seen("relay")]
    assert sent == [f"00-{TRACE_ID}-{s.context.span_id:016x}-01" for s in (failed, answered)]


def test_off_without_otel_variables_and_tracing_sdk_not_loaded(tmp_path: Path, fake_catalog: Path) -> None:
    program = f"""
import os, sys
for name in [n for n in os.environ if n.startswith("OTEL_")]:
    del os.environ[name]
from starlette.testclient import TestClient
from gatewright.app import create_app
from gatewright.core import tracing
from gatewright.settings import Settings
settings = Settings(data_dir={str(tmp_path)!r}, catalog={str(fake_catalog)!r}, platform=False)
with TestClient(create_app(settings)) as http:
    body = {{"model": "fake", "messages": [{{"role": "user", "content": "one two"}}]}}
    assert http.post("/v1/chat/completions", json=body).status_code == 200
    traced = {{"traceparent": "00-{TRACE_ID}-{CALLER_SPAN}-01"}}
    assert http.post("/v1/chat/completions", json=body, headers=traced).status_code == 200
assert not tracing.ENABLED
# (redis-py imports the SDK's metrics package for its own instruments; no tracing SDK is loaded.)
loaded = sorted(m for m in sys.modules if m.startswith(("opentelemetry.sdk.trace", "opentelemetry.exporter")))
assert not loaded, loaded
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr
