"""What tracing costs per request, in process (no sockets): the ASGI app on the fake backend, bare,
driven directly with a minimal ASGI exchange, with tracing off (the default: no OTEL_* variables)
and on (the SDK with an exporter that drops spans, so only span creation and the context are
measured). Also the cost of the checks the off path keeps: one module-attribute test per site.

    PYTHONPATH=. python -m bench.tracing [--requests 4000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

import orjson

from gatewright import telemetry
from gatewright.app import create_app
from gatewright.core import tracing
from gatewright.settings import Settings

CATALOG = """
[[models]]
id = "fake"
context_window = 4096
max_output = 64
prices = { input = 1.0, cached_input = 0.5, output = 2.0 }
deployments = [{ name = "fake", backend = "fake", max_retries = 0 }]
"""
BODY = orjson.dumps({"model": "fake", "messages": [{"role": "user", "content": "one two three four"}]})
SITES_PER_REQUEST = 7  # `if tracing.ENABLED` checks a bare non-streaming request passes


class Dropping:
    """An SDK SpanExporter that keeps nothing."""

    def export(self, spans: Any) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 0) -> bool:
        return True


async def _one(app: Any) -> None:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8000),
        "scheme": "http",
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": BODY, "more_body": False}

    status = 0

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    assert status == 200, status


async def _rate(app: Any, requests: int) -> float:
    """Microseconds per request, sequential."""
    for _ in range(200):
        await _one(app)
    started = time.perf_counter()
    for _ in range(requests):
        await _one(app)
    return (time.perf_counter() - started) / requests * 1e6


async def measure(requests: int, rounds: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        catalog = Path(tmp) / "catalog.toml"
        catalog.write_text(CATALOG)
        app = create_app(Settings(data_dir=Path(tmp), catalog=catalog, platform=False))
        app.access.stream = io.StringIO()  # the access lines go nowhere
        off: list[float] = []
        on: list[float] = []
        async with app.router.lifespan_context(app):
            for _ in range(rounds):  # interleaved, so drift of a busy machine hits both alike
                off.append(await _rate(app, requests))
                stop = telemetry.configure({}, exporter=Dropping())
                assert stop is not None and tracing.ENABLED
                on.append(await _rate(app, requests))
                await stop()
    check = min(timeit.repeat("tracing.ENABLED", globals={"tracing": tracing}, number=1_000_000, repeat=5))
    return {
        "off_us": statistics.median(off),
        "on_us": statistics.median(on),
        "guards_us": check * SITES_PER_REQUEST,  # seconds per million checks = µs per check
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    result = asyncio.run(measure(args.requests, args.rounds))
    print(
        f"per request, median of {args.rounds} rounds of {args.requests}: tracing off {result['off_us']:.1f} µs, "
        f"on {result['on_us']:.1f} µs (+{result['on_us'] - result['off_us']:.1f} µs); "
        f"the {SITES_PER_REQUEST} off-path checks: {result['guards_us'] * 1000:.0f} ns"
    )


if __name__ == "__main__":
    main()
