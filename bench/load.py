"""One load run against one target: wrk for whole responses, ``bench.stream_load`` for streams.

Both run as their own processes, so the load generator never shares an event loop with what it
measures; both return the same shape (milliseconds): requests/s, latency p50/p90/p99, errors, and
for streams the time to first byte as well.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procs import ROOT, Service, rss_kb

WRK_SCRIPT = ROOT / "bench" / "wrk_post.lua"
CHAT_PATH = "/v1/chat/completions"


@dataclass(frozen=True)
class Target:
    """A name in the tables, the server behind it, and the key it wants."""

    name: str
    service: Service

    @property
    def url(self) -> str:
        return self.service.url + CHAT_PATH


def request_body(stream: bool, max_tokens: int) -> bytes:
    body: dict[str, Any] = {
        "model": "mock",
        "messages": [{"role": "user", "content": "Say hello"}],
        "max_tokens": max_tokens,
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body).encode()


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise RuntimeError("wrk is not installed: apt-get install -y wrk")
    return path


def run_wrk(target: Target, body_file: Path, concurrency: int, duration: float) -> dict[str, Any]:
    seconds = max(1, round(duration))  # wrk takes whole seconds
    argv = [wrk_path(), "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "30s", "-s", str(WRK_SCRIPT)]
    env = {"BENCH_BODY_FILE": str(body_file), "BENCH_KEY": target.service.api_key or "", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([*argv, target.url], capture_output=True, text=True, env=env, timeout=duration + 60)
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no summary for {target.name}:\n{done.stdout}\n{done.stderr}")
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    elapsed = raw["duration_us"] / 1e6
    lat = raw["latency_us"]
    errors = {k: v for k, v in raw["errors"].items() if v}
    return {
        "tool": "wrk",
        "requests": raw["requests"],
        "rps": raw["requests"] / elapsed if elapsed else 0.0,
        "errors": errors,
        "total_ms": {k: lat[k] / 1000 for k in ("p50", "p90", "p99", "mean", "max")},
    }


def run_stream(target: Target, body_file: Path, concurrency: int, duration: float) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.stream_load", "--url", target.url, "--body", str(body_file)]
    argv += ["--concurrency", str(concurrency), "--duration", str(duration)]
    if target.service.api_key:
        argv += ["--key", target.service.api_key]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=duration + 120)
    if done.returncode != 0:
        raise RuntimeError(f"stream_load failed for {target.name}:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


class PeakRss:
    """Samples a service's resident memory (its whole process tree) while a run goes on."""

    def __init__(self, service: Service, every: float = 1.0) -> None:
        self.service = service
        self.every = every
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        # The process tree is read once: scanning /proc every sample would steal CPU from the run.
        pids = self.service.pids()
        while True:
            self.peak = max(self.peak, sum(rss_kb(pid) for pid in pids) / 1024)
            if self._stop.wait(self.every):
                return

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.service.rss_mb())
