"""Where gatewright's CPU goes under load: py-spy samples the gateway (bare and platform) while wrk
sends non-streaming requests through it to the mock; the collapsed stacks become self and inclusive
time per function, and per package (so the cost of the framework, the HTTP client and our own code
can be told apart)."""

from __future__ import annotations

import logging
import pstats
import re
import signal
import subprocess
import sys
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
    ("aiohttp/", "aiohttp"),
    ("/lib/python3", "stdlib"),
)


ENTRY = re.compile(r"gatewright/(__main__|cli/)")


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

    # The entry points hold every sample; they say nothing about where the time goes.
    ours = Counter({f: n for f, n in inclusive.items() if "gatewright/" in f and not ENTRY.search(f)})
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
    # --function: one row per function (line numbers drift as the code changes).
    record += ["--rate", "250", "--format", "raw", "--function", "--nonblocking", "-o", str(out)]
    done = subprocess.run(record, capture_output=True, text=True)
    driver.join()
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(f"py-spy failed: {done.stderr[-2000:]}")
    return {"load": load, **digest(out.read_text())}


def digest_pstats(path: Path, top: int = 25) -> dict[str, Any]:
    """Self CPU time (tottime) per function and per package from a cProfile dump. Time in C functions
    (``~`` entries: socket writes, JSON, builtins) is charged to the packages that called them."""
    stats = pstats.Stats(str(path))
    table: dict[tuple[str, int, str], Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in table.values())
    if total <= 0:
        return {"cpu_s": 0.0, "self": [], "packages": []}

    def name(key: tuple[str, int, str]) -> str:
        file, line, function = key
        short = file.split("site-packages/")[-1].split("/work/main/")[-1].split("/lib/python3.11/")[-1]
        return function if file == "~" else f"{function} ({short}:{line})"

    packages: Counter[str] = Counter()
    for key, (_, _, tt, _, callers) in table.items():
        if key[0] != "~":
            packages[package_of(key[0])] += tt
            continue
        for caller, edge in callers.items():
            packages[package_of(caller[0])] += edge[2]
    own = sorted(table.items(), key=lambda item: item[1][2], reverse=True)[:top]
    return {
        "cpu_s": round(total, 3),
        "self": [{"frame": name(k), "pct": round(100 * v[2] / total, 1)} for k, v in own],
        "packages": [{"frame": p, "pct": round(100 * n / total, 1)} for p, n in packages.most_common()],
    }


def cprofile_gateway(name: str, catalog: Path, platform: bool, seconds: float, concurrency: int) -> dict[str, Any]:
    """gatewright under cProfile (CPU clock of the event-loop thread) while wrk drives it."""
    port = procs.free_port()
    out = procs.TMP / f"cprofile-{port}.pstats"
    env = {
        "GATEWRIGHT_CATALOG": str(catalog),
        "GATEWRIGHT_DATA_DIR": str(procs.TMP / f"cprofile-{port}-data"),
        "GATEWRIGHT_PORT": str(port),
        **(procs.PLATFORM_ENV if platform else {}),
    }
    argv = [sys.executable, "-m", "bench.cprofile_gateway", "--out", str(out), *([] if platform else ["--bare"])]
    service = procs.spawn(f"cprofile-{name.replace(' ', '-')}", argv, port=port, health="/health", env=env)
    try:
        if platform:  # the runner writes the first start's keys where `gatewright serve` does
            service.api_key = procs.first_start_api_key(service, procs.TMP / f"cprofile-{port}-data")
        body = procs.TMP / "body-profile.json"
        body.write_bytes(request_body(False, 16))
        target = Target(name, service)
        run_wrk(target, body, concurrency, 2)  # warm
        service.process.send_signal(signal.SIGUSR1)
        load = run_wrk(target, body, concurrency, seconds)
        service.process.send_signal(signal.SIGUSR2)
    finally:
        service.stop()  # SIGTERM: the runner writes its stats on the way out
    return {"load": load, **digest_pstats(out)}


def run_profile(py_spy: Path, seconds: float, concurrency: int) -> dict[str, Any]:
    mock, catalog = procs.start_mock_with_catalog(16, "profile")
    services = [mock]
    try:
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
            results[f"{name} (cProfile, CPU clock)"] = cprofile_gateway(name, catalog, platform, seconds, concurrency)
            log.info("profiled %s under cProfile", name)
        return results
    finally:
        for service in reversed(services):
            service.stop()
