"""CPU per request of the application itself, without a socket: the real app (``create_app``, bare,
the ``fake`` backend) called as an ASGI app in a loop on one event loop, timed with the process's CPU
clock. What it measures is the gateway's own work per request (front door, routing, dialect,
pipeline); network, HTTP parsing and the load generator are out of the picture, so its spread is a
few percent even on a busy machine, where ``bench.overhead``'s is tens of percent.

python -m bench.inprocess [--requests 4000] [--rounds 5] [--json]

Compare two checkouts by running it with each on ``PYTHONPATH`` (``--json`` prints one line per
round), alternating, as ``bench.inprocess_compare`` does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from gatewright.app import create_app
from gatewright.settings import Settings

CATALOG = """
default_model = "echo"

[[models]]
id = "echo"
context_window = 4096
max_output = 64
backend = "fake"
prices = { input = 1.0, output = 2.0 }
"""

MESSAGES = [{"role": "user", "content": "one two three four five six seven eight"}]
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": ("/v1/chat/completions", {"model": "echo", "messages": MESSAGES}),
    "chat stream": ("/v1/chat/completions", {"model": "echo", "messages": MESSAGES, "stream": True}),
    "messages": ("/v1/messages", {"model": "echo", "messages": MESSAGES, "max_tokens": 16}),
    "messages stream": ("/v1/messages", {"model": "echo", "messages": MESSAGES, "max_tokens": 16, "stream": True}),
    "models": ("/v1/models", {}),
}


async def _call(app: Any, path: str, body: bytes) -> int:
    method = "POST" if body else "GET"
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"bench"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)  # the client stays; a disconnect never comes
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def measure(requests: int, rounds: int) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        catalog = Path(tmp) / "catalog.toml"
        catalog.write_text(CATALOG)
        app = create_app(Settings(platform=False, catalog=catalog, data_dir=Path(tmp), log_level="warning"))
        out: dict[str, list[float]] = {name: [] for name in CASES}
        async with app.router.lifespan_context(app):
            for _ in range(rounds):
                for name, (path, payload) in CASES.items():
                    body = orjson.dumps(payload) if payload else b""
                    for _ in range(requests // 10):  # warm up
                        await _call(app, path, body)
                    started = time.process_time()
                    for _ in range(requests):
                        status = await _call(app, path, body)
                        assert status == 200, (name, status)
                    out[name].append(1e6 * (time.process_time() - started) / requests)
        return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="one JSON line: case → µs per round")
    args = parser.parse_args(argv)
    try:
        import uvloop

        uvloop.install()  # what `gatewright serve` runs on
    except ImportError:
        pass
    result = asyncio.run(measure(args.requests, args.rounds))
    if args.json:
        print(json.dumps(result))
        return
    for name, values in result.items():
        print(
            f"{name:12} {statistics.median(values):8.1f} µs/request (rounds: {', '.join(f'{v:.1f}' for v in values)})"
        )


if __name__ == "__main__":
    main()
