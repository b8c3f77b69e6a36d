"""``make bench``: every benchmark in one run, raw JSON under ``bench/results/``, then ``docs/benchmarks.md``.

python -m bench.run                      # the full run (35-40 minutes on a quiet 2-core machine)
python -m bench.run --quick              # a few seconds per cell: checks the harness, not the numbers
python -m bench.run --only overhead      # overhead, engine, profile (comma-separated)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import envs, machine, procs
from bench.batching import BatchingConfig, run_batching, summary
from bench.compare import compare
from bench.engine import EngineConfig, run_engine
from bench.overhead import OverheadConfig, run_overhead
from bench.profile import run_profile
from bench.report import write

log = logging.getLogger("bench")

RESULTS = procs.ROOT / "bench" / "results"
PARTS = ("overhead", "engine", "batching", "profile")


def model_path() -> Path:
    from gatewright.backends.weights import resolve_model_path
    from gatewright.settings import Settings

    return Path(resolve_model_path("package:qwen2.5-coder-0.5b-instruct", Settings().model_cache))


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs, to check the harness")
    parser.add_argument("--only", default=",".join(PARTS), help="parts to run: " + ", ".join(PARTS))
    parser.add_argument("--reps", type=int, help="overhead repetitions (default 5; quick 2)")
    parser.add_argument("--duration", type=float, help="seconds per overhead cell (default 10; quick 2)")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--litellm-workers", type=int, default=2)
    parser.add_argument(
        "--gatewright-workers", default="1,2", help="gatewright process counts to measure (default 1,2)"
    )
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument("--baseline", help="another checkout measured beside this one (overhead part)")
    parser.add_argument("--baseline-label", default="before", help="its name in the tables (default: before)")
    parser.add_argument(
        "--baseline-commit",
        help="a commit measured beside this checkout: a git worktree of it is made (once) and used as --baseline, "
        "labelled with the commit; the paired before/after table with ratios is printed at the end",
    )
    parser.add_argument("--engine-reps", type=int, help="embedded-engine repetitions (default 3; quick 1)")
    parser.add_argument("--max-tokens", type=int, help="tokens generated per engine request (default 64)")
    parser.add_argument("--batching-concurrency", help="concurrent requests of the batching part (default 1,2,4,8)")
    parser.add_argument("--code-tokens", type=int, help="code in the speed prompt, in tokens (default 200)")
    parser.add_argument("--prefix-tokens", type=int, help="shared prefix of the cache runs (default 2000)")
    parser.add_argument("--profile-seconds", type=float, help="py-spy sampling time per gateway (default 20)")
    parser.add_argument("--note", default="", help="a line for the page, e.g. 'taken on a busy machine'")
    parser.add_argument("--doc", type=Path, default=procs.ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--no-doc", action="store_true", help="write the JSON only")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per health poll otherwise
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise SystemExit(f"unknown part(s): {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}")
    quick = args.quick
    envs.ensure_wrk()
    litellm_venv = envs.venv("litellm") if "overhead" in parts and not args.no_litellm else envs.VENVS["litellm"][0]
    server_venv = envs.venv("llamacpp") if "engine" in parts else envs.VENVS["llamacpp"][0]
    started = time.time()
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": "python -m bench.run " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "note": args.note,
        "quick": quick,
        "machine": machine.describe(litellm_venv, server_venv),
    }
    if args.baseline_commit:
        args.baseline, args.baseline_label = str(baseline_worktree(args.baseline_commit)), args.baseline_commit
    if "overhead" in parts:
        config = OverheadConfig(
            duration=args.duration or (2.0 if quick else 10.0),
            reps=args.reps or (2 if quick else 5),
            concurrency=tuple(int(c) for c in args.concurrency.split(",")),
            warmup=1.0 if quick else 3.0,
            litellm=not args.no_litellm,
            litellm_workers=args.litellm_workers,
            gatewright_workers=tuple(int(n) for n in args.gatewright_workers.split(",")),
            baseline=args.baseline,
            baseline_label=args.baseline_label,
        )
        results["overhead"] = run_overhead(config, litellm_venv, procs.TMP / "bodies")
    if "engine" in parts:
        engine_config = EngineConfig(
            reps=args.engine_reps or (1 if quick else 3),
            max_tokens=args.max_tokens or (8 if quick else 64),
            code_tokens=args.code_tokens or (40 if quick else 200),
            prefix_tokens=args.prefix_tokens or (128 if quick else 2000),
            cache_reps=1 if quick else 2,
        )
        results["engine"] = run_engine(engine_config, model_path(), server_venv)
    if "batching" in parts:
        batching_config = BatchingConfig(
            reps=args.engine_reps or (1 if quick else 3),
            concurrency=tuple(int(c) for c in args.batching_concurrency.split(","))
            if args.batching_concurrency
            else ((1, 2) if quick else (1, 2, 4, 8)),
            max_tokens=args.max_tokens or (8 if quick else 64),
            mixed_tokens=(40, 80, 120, 200) if quick else (100, 400, 1000, 2000),
            join_tokens=200 if quick else 2000,
            running_tokens=24 if quick else 160,
        )
        results["batching"] = run_batching(batching_config, model_path())
        results["batching"]["summary"] = summary(results["batching"])
    if "profile" in parts:
        py_spy = envs.venv("tools") / "bin" / "py-spy"
        results["profile"] = run_profile(py_spy, args.profile_seconds or (4.0 if quick else 20.0), 16)
    results["machine"]["load_average_at_end"] = os.getloadavg()
    results["wall_s"] = round(time.time() - started, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"{stamp}{'-quick' if quick else ''}.json"
    path.write_text(json.dumps(results, indent=1, allow_nan=True))
    log.info("results in %s (%.0f s)", path, results["wall_s"])
    if not args.no_doc:
        write([path], args.doc)
        log.info("wrote %s", args.doc)
    if args.baseline and "overhead" in results:
        print(compare(results, args.baseline_label))


def baseline_worktree(commit: str) -> Path:
    """A detached git worktree of ``commit`` beside the repository (made once, then reused): the
    older code runs on this checkout's interpreter and libraries, so only the code differs."""
    sha = subprocess.run(
        ["git", "-C", str(procs.ROOT), "rev-parse", "--verify", f"{commit}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    path = Path(tempfile.gettempdir()) / f"gatewright-baseline-{sha[:12]}"  # outside the tree the linters scan
    if not (path / "gatewright").is_dir():
        subprocess.run(["git", "-C", str(procs.ROOT), "worktree", "prune"], check=True)
        subprocess.run(["git", "-C", str(procs.ROOT), "worktree", "add", "--detach", str(path), sha], check=True)
    return path


if __name__ == "__main__":
    main()
