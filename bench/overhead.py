"""Gateway overhead: the same load straight to the mock, through gatewright (bare and with the platform
layer) and through LiteLLM proxy, interleaved target by target so machine drift hits all alike."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from bench import procs
from bench.load import PeakRss, Target, request_body, run_stream, run_wrk

log = logging.getLogger("bench.overhead")

MODES: dict[str, tuple[bool, Callable[[Target, Path, int, float], dict[str, Any]]]] = {
    "non-streaming": (False, run_wrk),
    "streaming": (True, run_stream),
}


@dataclass(frozen=True)
class OverheadConfig:
    duration: float = 10.0
    reps: int = 5
    concurrency: tuple[int, ...] = (1, 16, 64)
    tokens: int = 16  # tokens per answer = content chunks per stream
    warmup: float = 3.0
    litellm: bool = True
    litellm_workers: int = 2
    # gatewright process counts to measure (`gatewright serve --workers N`)
    gatewright_workers: tuple[int, ...] = (1, 2)
    gatewright_log_level: str = "info"  # the default a user gets
    # Another checkout (e.g. a git worktree of an earlier commit) measured beside this one, target
    # by target in the same repetitions: "gatewright bare" and "gatewright bare @<label>".
    baseline: str | None = None
    baseline_label: str = "before"


def _check(target: Target, body: bytes) -> None:
    """One request by hand before any load: a target that answers errors would measure nothing."""
    headers = {"content-type": "application/json"}
    if target.service.api_key:
        headers["authorization"] = f"Bearer {target.service.api_key}"
    response = httpx.post(target.url, content=body, headers=headers, timeout=60)
    if response.status_code != 200 or b"Hello" not in response.content:
        raise RuntimeError(f"{target.name} answered {response.status_code}: {response.text[:500]}")


def start_targets(config: OverheadConfig, litellm_venv: Path) -> list[Target]:
    services: list[procs.Service] = []
    try:
        mock, catalog = procs.start_mock_with_catalog(config.tokens, "mock")
        services.append(mock)
        level = config.gatewright_log_level
        targets = [Target("mock (direct)", mock)]
        checkouts = [("", procs.ROOT)]
        if config.baseline:
            checkouts.append((f" @{config.baseline_label}", Path(config.baseline)))
        for workers in config.gatewright_workers:
            suffix = "" if workers == 1 else f" ×{workers}"
            for kind, platform in (("bare", False), ("platform", True)):
                for label, checkout in checkouts:
                    service = procs.start_gatewright(
                        f"gatewright-{kind}-{workers}{label.replace(' @', '-')}",
                        catalog,
                        platform=platform,
                        log_level=level,
                        workers=workers,
                        checkout=checkout,
                    )
                    services.append(service)
                    targets.append(Target(f"gatewright {kind}{suffix}{label}", service))
        if config.litellm:
            litellm = procs.start_litellm(litellm_venv, mock.url, config.litellm_workers)
            services.append(litellm)
            targets.append(Target(f"LiteLLM ({config.litellm_workers} workers)", litellm))
        return targets
    except BaseException:
        for service in reversed(services):
            service.stop()
        raise


def run_overhead(config: OverheadConfig, litellm_venv: Path, body_dir: Path) -> dict[str, Any]:
    body_dir.mkdir(parents=True, exist_ok=True)
    bodies: dict[str, Path] = {}
    for mode, (stream, _) in MODES.items():
        bodies[mode] = body_dir / f"body-{mode}.json"
        bodies[mode].write_bytes(request_body(stream, config.tokens))
    targets = start_targets(config, litellm_venv)
    try:
        for target in targets:
            for path in bodies.values():
                _check(target, path.read_bytes())
        memory: dict[str, dict[str, float]] = {t.name: {"start_mb": t.service.rss_mb()} for t in targets}
        for target in targets:  # warm every path once (LiteLLM builds its router lazily)
            for mode, (_, runner) in MODES.items():
                runner(target, bodies[mode], 16, config.warmup)
        time.sleep(2)
        for target in targets:
            memory[target.name]["idle_mb"] = target.service.rss_mb()
            memory[target.name]["peak_mb"] = 0.0
        runs: list[dict[str, Any]] = []
        for rep in range(config.reps):
            for mode, (_, runner) in MODES.items():
                for concurrency in config.concurrency:
                    shift = rep % len(targets)
                    for target in targets[shift:] + targets[:shift]:  # A B C D, then B C D A, ...
                        cpu_before = target.service.cpu_seconds()
                        with PeakRss(target.service) as peak:
                            result = runner(target, bodies[mode], concurrency, config.duration)
                        cpu = target.service.cpu_seconds() - cpu_before
                        # A server still working off queued requests would steal the next run's CPU.
                        settle = target.service.wait_idle()
                        memory[target.name]["peak_mb"] = max(memory[target.name]["peak_mb"], peak.peak)
                        runs.append(
                            {
                                "rep": rep,
                                "mode": mode,
                                "concurrency": concurrency,
                                "target": target.name,
                                **result,
                                # CPU of the server's process tree per answered request: steadier than
                                # latency on a busy machine (includes requests still queued at the end).
                                "cpu_ms_per_request": 1000 * cpu / result["requests"] if result["requests"] else None,
                                "settle_s": round(settle, 2),
                            }
                        )
                        log.info(
                            "rep %d %s c=%d %-24s %8.0f req/s p50 %.2f ms errors %s",
                            rep,
                            mode,
                            concurrency,
                            target.name,
                            result["rps"],
                            result["total_ms"]["p50"],
                            result["errors"] or 0,
                        )
        for target in targets:
            memory[target.name]["after_mb"] = target.service.rss_mb()
        return {
            "config": asdict(config),
            "targets": [t.name for t in targets],
            "baseline": targets[0].name,
            "processes": {t.name: len(t.service.pids()) for t in targets},
            "runs": runs,
            "memory": memory,
        }
    finally:
        for target in reversed(targets):
            target.service.stop()
