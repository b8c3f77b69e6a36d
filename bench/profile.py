"""Where gatewright's CPU goes under load: py-spy samples the gateway (bare and platform) while wrk
sends non-streaming requests through it to the mock; the collapsed stacks become self and inclusive
time per function, and per package (so the cost of the framework, the HTTP client and our own code
can be told apart)."""

from __future__ import annotations

import logging
import subprocess
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from bench import procs
from bench.load import Target, request_body, run_wrk

log = logging.getLogger("bench.profile")

# Where a frame's file lives → the name it is grouped under.
PACKAGES = (
    ("gatewright/", "gatewright"),
    ("starlette/", "starlette"),
    ("uvicorn/", "uvicorn"),
    ("httpx/", "httpx"),
    ("httpcore/", "httpcore"),
    ("anyio/", "anyio"),
    ("h11/", "h11"),
    ("pydantic", "pydantic"),
    ("sqlalchemy/", "sqlalchemy"),
    ("aiosqlite/", "aiosqlite"),
    ("logging/", "logging"),
    ("asyncio/", "asyncio"),
)


def package_of(frame: str) -> str:
    for needle, name in PACKAGES:
        if needle in frame:
            return name
    return "other"


def digest(raw: str, top: int = 25) -> dict[str, Any]:
    """Self and inclusive sample shares from py-spy's ``--format raw`` (collapsed stacks)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        own[frames[-1]] += n
        packages[package_of(frames[-1])] += n
        for frame in set(frames):
            inclusive[frame] += n
    if not total:
        return {"samples": 0, "self": [], "inclusive": [], "packages": []}

    def share(counter: Counter[str], keep: int) -> list[dict[str, Any]]:
        return [{"frame": f, "pct": round(100 * n / total, 1)} for f, n in counter.most_common(keep)]

    ours = Counter({f: n for f, n in inclusive.items() if "gatewright/" in f})
    return {
        "samples": total,
        "self": share(own, top),
        "inclusive_gatewright": share(ours, top),
        "packages": share(packages, len(packages)),
    }


def profile_gateway(py_spy: Path, target: Target, body: Path, seconds: float, concurrency: int) -> dict[str, Any]:
    out = procs.TMP / f"profile-{target.service.port}.txt"
    load: dict[str, Any] = {}

    def drive() -> None:
        load.update(run_wrk(target, body, concurrency, seconds + 2))

    driver = threading.Thread(target=drive)
    driver.start()
    record = [str(py_spy), "record", "--pid", str(target.service.process.pid), "--duration", f"{seconds:g}"]
    record += ["--rate", "250", "--format", "raw", "--nonblocking", "-o", str(out)]
    done = subprocess.run(record, capture_output=True, text=True)
    driver.join()
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(f"py-spy failed: {done.stderr[-2000:]}")
    return {"load": load, **digest(out.read_text())}


def run_profile(py_spy: Path, seconds: float, concurrency: int) -> dict[str, Any]:
    mock = procs.start_mock(16)
    services = [mock]
    try:
        catalog = procs.mock_catalog(mock.url, procs.TMP / f"catalog-profile-{mock.port}.toml")
        body = procs.TMP / "body-profile.json"
        body.write_bytes(request_body(False, 16))
        results: dict[str, Any] = {"seconds": seconds, "concurrency": concurrency}
        for name, platform in (("gatewright bare", False), ("gatewright platform", True)):
            service = procs.start_gatewright(name.replace(" ", "-"), catalog, platform=platform)
            services.append(service)
            target = Target(name, service)
            run_wrk(target, body, concurrency, 2)  # warm
            results[name] = profile_gateway(py_spy, target, body, seconds, concurrency)
            log.info("profiled %s: %d samples", name, results[name]["samples"])
            service.stop()
        return results
    finally:
        for service in reversed(services):
            service.stop()
