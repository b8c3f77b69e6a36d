"""Latency of a billed request, in process: the real app with the platform on (keys, limits, the
ledger on SQLite in a temporary directory, the ``fake`` backend), called as an ASGI app. It shows
what waiting for the settlement's commit before the answer ends (issue 16) costs: wall-clock time
per request at concurrency 1 and 16, and the process's CPU per request.

python -m bench.settle_latency [--requests 600] [--rounds 3] [--json]
python -m bench.settle_latency --compare /path/to/other/checkout [--pairs 4]

``--compare`` runs the other checkout and this one alternately (fresh processes, one round each),
so a busy machine's drift hits both alike, and prints the medians side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench.inprocess import CATALOG, MESSAGES, _call

ROOT = Path(__file__).resolve().parent.parent
CASES = {
    "chat": {"model": "echo", "messages": MESSAGES},
    "chat stream": {"model": "echo", "messages": MESSAGES, "stream": True},
}
CONCURRENCY = (1, 16)


async def _authorized(app: Any, key: str, path: str, body: bytes) -> int:
    original = app

    async def with_key(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["headers"] = [*scope["headers"], (b"authorization", f"Bearer {key}".encode())]
        await original(scope, receive, send)

    return await _call(with_key, path, body)


async def measure(requests: int, rounds: int) -> dict[str, list[float]]:
    from gatewright.app import create_app
    from gatewright.settings import Settings
    from gatewright.wiring import bootstrap

    with tempfile.TemporaryDirectory() as tmp:
        catalog = Path(tmp) / "catalog.toml"
        catalog.write_text(CATALOG)
        settings = Settings(
            catalog=catalog,
            data_dir=Path(tmp),
            log_level="warning",
            starting_credits=10**12,
            default_requests_per_minute=10**9,
        )
        first = await bootstrap(settings)
        assert first is not None
        key = first.api_key.key
        app = create_app(settings)
        out: dict[str, list[float]] = {}
        async with app.router.lifespan_context(app):
            for _ in range(rounds):
                for name, payload in CASES.items():
                    body = orjson.dumps(payload)
                    for concurrency in CONCURRENCY:
                        out.setdefault(f"{name} c={concurrency} ms p50", [])
                        out.setdefault(f"{name} c={concurrency} CPU µs/req", [])
                        await _load(app, key, body, concurrency, requests // 10)  # warm up
                        cpu = time.process_time()
                        latencies = await _load(app, key, body, concurrency, requests)
                        cpu_per = 1e6 * (time.process_time() - cpu) / requests
                        out[f"{name} c={concurrency} ms p50"].append(1e3 * statistics.median(latencies))
                        out[f"{name} c={concurrency} CPU µs/req"].append(cpu_per)
        return out


async def _load(app: Any, key: str, body: bytes, concurrency: int, requests: int) -> list[float]:
    latencies: list[float] = []
    left = requests

    async def client() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            started = time.perf_counter()
            status = await _authorized(app, key, "/v1/chat/completions", body)
            latencies.append(time.perf_counter() - started)
            assert status == 200, status

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies


def _run(checkout: Path, requests: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": f"{checkout}{os.pathsep}{ROOT}"}
    script = str(ROOT / "bench" / "settle_latency.py")  # run by path: the checkout's gatewright comes first
    argv = [sys.executable, script, "--requests", str(requests), "--rounds", "1", "--json"]
    done = subprocess.run(argv, cwd=checkout, env=env, capture_output=True, text=True, check=True, timeout=900)
    result: dict[str, list[float]] = json.loads(done.stdout.strip().splitlines()[-1])
    return {name: values[0] for name, values in result.items()}


def compare(other: Path, pairs: int, requests: int, label: str) -> None:
    theirs: list[dict[str, float]] = []
    ours: list[dict[str, float]] = []
    for _ in range(pairs):
        theirs.append(_run(other, requests))
        ours.append(_run(ROOT, requests))
    print(f"| case | {label} | this checkout | change |")
    print("|---|---|---|---|")
    for name in ours[0]:
        a = statistics.median(r[name] for r in theirs)
        b = statistics.median(r[name] for r in ours)
        print(f"| {name} | {a:.2f} | {b:.2f} | {b - a:+.2f} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--compare", type=Path, help="another checkout, measured alternately with this one")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--label", default="before")
    args = parser.parse_args(argv)
    if args.compare is not None:
        compare(args.compare, args.pairs, args.requests, args.label)
        return
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(measure(args.requests, args.rounds))
    if args.json:
        print(json.dumps(result))
        return
    for name, values in result.items():
        print(f"{name:28} {statistics.median(values):9.2f}  (rounds: {', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
