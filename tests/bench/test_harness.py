"""The load generators count what they see (including failures), and the analysis pairs each
target with the mock of the same repetition."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import procs
from bench.analyze import engine_ratio, overhead_table
from bench.ledger_rows import statement_per_row
from bench.load import Target, request_body, run_stream, run_wrk
from bench.profile import digest
from bench.report import render
from bench.stats import percentile, spread
from gatewright.store import sqlite_raw


def body_file(tmp_path: Path, stream: bool) -> Path:
    path = tmp_path / f"body-{stream}.json"
    path.write_bytes(request_body(stream, 16))
    return path


def test_stream_load_counts_streams_and_failures(mock: procs.Service, tmp_path: Path) -> None:
    target = Target("mock", mock)
    ok = run_stream(target, body_file(tmp_path, True), concurrency=4, duration=1.0)
    assert ok["requests"] > 10 and ok["errors"] == {}
    assert ok["ttfb_ms"]["n"] == ok["total_ms"]["n"] == ok["requests"]
    assert 0 < ok["ttfb_ms"]["p50"] <= ok["total_ms"]["p50"] <= ok["total_ms"]["p99"]

    class Wrong(Target):
        @property
        def url(self) -> str:
            return self.service.url + "/nowhere"

    failed = run_stream(Wrong("mock", mock), body_file(tmp_path, True), concurrency=2, duration=0.5)
    assert failed["requests"] == 0 and failed["errors"].get("status 404", 0) > 0


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install -y wrk)")
def test_wrk_script_posts_the_body_and_reports(mock: procs.Service, tmp_path: Path) -> None:
    result = run_wrk(Target("mock", mock), body_file(tmp_path, False), concurrency=2, duration=1.0)
    assert result["requests"] > 10 and result["errors"] == {}
    assert 0 < result["total_ms"]["p50"] <= result["total_ms"]["p99"]
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"[1")  # the mock answers 400: wrk must count it as an error
    refused = run_wrk(Target("mock", mock), bad, concurrency=1, duration=1.0)
    assert refused["errors"].get("status", 0) == refused["requests"] > 0


def test_percentile_and_spread() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 90), percentile(values, 99)) == (50, 90, 99)
    noise = spread([9.0, 10.0, 12.0])
    assert noise["median"] == 10.0 and noise["noise_pct"] == pytest.approx(30.0)


def _run(rep: int, target: str, rps: float, p50: float) -> dict[str, Any]:
    return {
        "rep": rep,
        "mode": "non-streaming",
        "concurrency": 16,
        "target": target,
        "requests": int(rps * 10),
        "rps": rps,
        "errors": {},
        "total_ms": {"p50": p50, "p90": p50 * 2, "p99": p50 * 4},
    }


def test_overhead_is_paired_within_a_repetition() -> None:
    # The machine drifts between repetitions; the gateway is always 0.4 ms behind the mock.
    runs = [_run(0, "mock", 9000, 1.0), _run(0, "gw", 2000, 1.4), _run(1, "mock", 5000, 3.0)]
    runs += [_run(1, "gw", 1500, 3.4), _run(2, "mock", 7000, 2.0), _run(2, "gw", 1800, 2.4)]
    result = {"runs": runs, "baseline": "mock", "targets": ["mock", "gw"]}
    gw = next(r for r in overhead_table(result) if r["target"] == "gw")
    assert gw["overhead total_ms.p50"]["median"] == pytest.approx(0.4)
    assert gw["overhead total_ms.p50"]["noise_pct"] == pytest.approx(0.0, abs=1e-6)
    assert gw["rps"]["median"] == 1800


def test_report_states_which_targets_are_met() -> None:
    runs = [_run(0, "mock (direct)", 9000, 1.0), _run(0, "gatewright bare", 2000, 1.5)]
    runs += [{**_run(0, "mock (direct)", 9000, 1.0), "concurrency": 64}]
    runs += [{**_run(0, "gatewright bare", 900, 9.0), "concurrency": 64}]
    runs += [{**_run(0, "LiteLLM (2 workers)", 100, 600.0), "concurrency": 64}]
    overhead = {
        "runs": runs,
        "baseline": "mock (direct)",
        "targets": ["mock (direct)", "gatewright bare", "LiteLLM (2 workers)"],
        "config": {"reps": 1, "duration": 1, "tokens": 16},
        "memory": {},
    }
    machine = {
        "cpu": "test",
        "cores": 2,
        "flags": {"avx2": True},
        "memory_gib": 1,
        "kernel": "k",
        "hypervisor": False,
        "python": "3.11",
        "versions": {},
        "load_average_at_start": [0.0, 0.0, 0.0],
    }
    page = render({"machine": machine, "overhead": overhead}, "results.json")
    assert "| Overhead p50 < 1 ms at concurrency 16 (bare) | +0.50 ms | **met** |" in page
    assert "| Overhead p99 < 5 ms at concurrency 16 (bare) | +2.00 ms | **met** |" in page
    assert "| ≥ 5× LiteLLM's req/s at concurrency 64 (gatewright bare) | 9.0× | **met** |" in page


def test_engine_ratio_pairs_repetitions() -> None:
    def run(rep: int, engine: str, gen: float) -> dict[str, Any]:
        return {"rep": rep, "concurrency": 1, "engine": engine, "requests": [{"gen_tps": gen}]}

    speed = [run(0, "gw", 18.0), run(0, "direct", 20.0), run(1, "gw", 9.0), run(1, "direct", 10.0)]
    assert engine_ratio({"speed": speed}, "gw", "direct")["median"] == pytest.approx(0.9)


def test_profile_digest_counts_self_and_inclusive_time() -> None:
    raw = "\n".join(
        [
            "main (a.py:1);handle (gatewright/api/x.py:2);post (httpx/_client.py:3) 6",
            "main (a.py:1);handle (gatewright/api/x.py:2) 2",
            "main (a.py:1);log (logging/__init__.py:9) 2",
        ]
    )
    out = digest(raw)
    assert out["samples"] == 10
    assert out["self"][0] == {"frame": "post (httpx/_client.py:3)", "pct": 60.0}
    assert out["inclusive_gatewright"] == [{"frame": "handle (gatewright/api/x.py:2)", "pct": 80.0}]
    assert {p["frame"]: p["pct"] for p in out["packages"]} == {"httpx": 60.0, "gatewright": 20.0, "logging": 20.0}


def test_ledger_rows_measures_every_combination_and_leaves_the_store_code_as_it_was(tmp_path: Path) -> None:
    original = sqlite_raw._insert_rows
    with statement_per_row():
        assert sqlite_raw._insert_rows is not original
    assert sqlite_raw._insert_rows is original

    out = tmp_path / "rows.json"
    argv = ["--rows", "0,40", "--batch", "6", "--batches", "2", "--reps", "1", "--json", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "bench.ledger_rows", *argv],
        cwd=procs.ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    runs = json.loads(out.read_text())["runs"]
    cells = {(r["rows"], r["loop"], r["ids"], r["writes"]) for r in runs}
    assert len(runs) == len(cells) == 2 * 2 * 2 * 2
    # Every commit's CPU is counted, on whichever thread it ran (the loop's, with the lock free).
    assert all(r["cpu_us_per_settlement"] > 0 and r["wall_ms_per_batch"] > 0 for r in runs)
    assert done.stdout.count("| 40 |") == 8
