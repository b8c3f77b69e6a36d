"""Embeddings: gatewright's ``/v1/embeddings`` (embedded all-MiniLM-L6-v2) against the model's
reference implementation, sentence-transformers on PyTorch, run directly in-process on the same
machine (``bench/embeddings_direct.py``, in a venv of its own).

For 1, 16 and 256 inputs per request, one request after another: sentences per second and p50/p99
latency per request. The two sides run in turns (reference, gateway, reference, ...) so a busy
spell of the machine hits both; each side's best round counts. The client asks for base64 and
decodes it with numpy, as the reference hands back numpy arrays. The gateway runs as started by
``make serve`` (keys, rate limits, billing on; limits raised so the load is not refused).

Then fairness: the embedded chat model streaming alone and while 256-input embedding requests
run back to back, and the embedding throughput with and without the chat stream beside it.

    python -m bench.embeddings             # about 8 minutes on a quiet 2-core machine
    python -m bench.embeddings --quick     # checks the harness
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench import envs, procs
from bench.stats import percentile
from gatewright.cli.serve import read_first_start_keys

log = logging.getLogger("bench.embeddings")

SIZES = (1, 16, 256)
MODEL = "all-minilm-l6-v2"
CHAT_MODEL = "qwen2.5-coder-0.5b-instruct"

SUBJECTS = ["The gateway", "A small model", "Our billing ledger", "The reverse proxy", "Every worker process"]
VERBS = ["serves", "checks", "retries", "streams", "counts", "records"]
OBJECTS = [
    "requests",
    "embeddings for search",
    "tokens of every prompt and completion",
    "the credits an account spends on each call, to the last one",
    "the answers of an upstream provider when the first deployment fails and the breaker opens",
]
TAILS = ["", " today.", " on two cores.", " without a model hub, from packages pinned by hash.", " (quickly)."]


def corpus(count: int = 500) -> list[str]:
    """Sentences of 5 to ~35 tokens, all different."""
    out = []
    for i in range(count):
        s, v, o, t = SUBJECTS[i % 5], VERBS[i % 6], OBJECTS[(i // 3) % 5], TAILS[(i // 7) % 5]
        out.append(f"{s} {v} {o}{t} #{i}")
    return out


class Direct:
    """The reference in its own process, loaded once."""

    def __init__(self, model_dir: Path) -> None:
        python = envs.venv("embed-ref") / "bin" / "python"
        script = procs.ROOT / "bench" / "embeddings_direct.py"
        # -P: bench/ is not put on the path (its profile.py would shadow the standard library's).
        argv = [str(python), "-P", str(script), str(model_dir)]
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.info = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        while True:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError("the reference process ended")
            if line.startswith("{"):
                answer: dict[str, Any] = json.loads(line)
                return answer

    def run(self, texts: list[str], n: int, seconds: float, batch_size: int, threads: int) -> list[float]:
        assert self.process.stdin is not None
        command = {
            "op": "run",
            "texts": texts,
            "n": n,
            "seconds": seconds,
            "batch_size": batch_size,
            "threads": threads,
        }
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        latencies: list[float] = self._read()["latencies"]
        return latencies

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(30)


def start_gateway() -> tuple[procs.Service, str]:
    port = procs.free_port()
    data_dir = procs.TMP / f"embeddings-gw-{port}"
    env = {
        "GATEWRIGHT_PORT": str(port),
        "GATEWRIGHT_DATA_DIR": str(data_dir),
        "GATEWRIGHT_LOG_LEVEL": "warning",
        "GATEWRIGHT_DEFAULT_REQUESTS_PER_MINUTE": "10000000",
        "GATEWRIGHT_DEFAULT_TOKENS_PER_MINUTE": "1000000000",
        "GATEWRIGHT_STARTING_CREDITS": "100000000000",
    }
    argv = [sys.executable, "-m", "gatewright", "serve"]
    service = procs.spawn("gatewright-embeddings", argv, port=port, health="/health", env=env, timeout=300)
    api_key, _ = read_first_start_keys(data_dir)  # stdout is a file: the keys are in one
    if not api_key:
        service.stop()
        raise RuntimeError("no API key after the first start:\n" + service.log()[-2000:])
    return service, api_key


def http_run(client: httpx.Client, texts: list[str], n: int, seconds: float) -> list[float]:
    latencies: list[float] = []
    offset = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds or len(latencies) < 3:
        batch = [texts[(offset + i) % len(texts)] for i in range(n)]
        offset += n
        t0 = time.perf_counter()
        reply = client.post("/v1/embeddings", json={"model": MODEL, "input": batch, "encoding_format": "base64"})
        reply.raise_for_status()
        vectors = np.array([np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in reply.json()["data"]])
        latencies.append(time.perf_counter() - t0)
        assert vectors.shape == (n, 384)
    return latencies


def summary(latencies: list[float], n: int) -> dict[str, float]:
    return {
        "requests": len(latencies),
        "sentences_per_s": n * len(latencies) / sum(latencies),
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
    }


def cpu_seconds(pid: int) -> float:
    return procs.cpu_ticks(pid) / procs.CLOCK_TICKS


def throughput(
    direct: Direct,
    client: httpx.Client,
    gateway: procs.Service,
    texts: list[str],
    seconds: float,
    rounds: int,
    sizes: tuple[int, ...] = SIZES,
    ref_threads: tuple[int, ...] = (1, os.cpu_count() or 1),
) -> dict[str, Any]:
    """Per size, each side's best round; also sentences per CPU-second of the serving process
    (the reference's, the gateway's), which a busy machine distorts much less than wall time."""
    cells: dict[str, Any] = {}
    for n in sizes:
        best: dict[str, dict[str, float]] = {}
        for _ in range(rounds):
            # The reference's best: sentence-transformers' default batch or all at once, on one
            # intra-op thread per core or on one thread (which a busy machine may favour).
            for batch_size, threads in itertools.product(sorted({32, n}), sorted(set(ref_threads))):
                cpu = cpu_seconds(direct.process.pid)
                latencies = direct.run(texts, n, seconds, batch_size, threads)
                runs = summary(latencies, n)
                runs["sentences_per_cpu_s"] = n * len(latencies) / max(cpu_seconds(direct.process.pid) - cpu, 1e-9)
                if runs["sentences_per_s"] > best.get("reference", {}).get("sentences_per_s", 0):
                    best["reference"] = {**runs, "batch_size": batch_size, "threads": threads}
            cpu = gateway.cpu_seconds()
            latencies = http_run(client, texts, n, seconds)
            runs = summary(latencies, n)
            runs["sentences_per_cpu_s"] = n * len(latencies) / max(gateway.cpu_seconds() - cpu, 1e-9)
            if runs["sentences_per_s"] > best.get("gatewright", {}).get("sentences_per_s", 0):
                best["gatewright"] = runs
        gw, ref = best["gatewright"], best["reference"]
        best["ratio"] = {
            "value": gw["sentences_per_s"] / ref["sentences_per_s"],
            "per_cpu_second": gw["sentences_per_cpu_s"] / ref["sentences_per_cpu_s"],
        }
        cells[str(n)] = best
        log.info("n=%d: %s", n, json.dumps(best))
    return cells


def chat_stream(client: httpx.Client) -> dict[str, float]:
    """One greedy 64-token stream: time to first token and seconds per token after it."""
    body = {
        "model": CHAT_MODEL,
        "messages": [{"role": "user", "content": "Write a short poem about load balancers."}],
        "max_tokens": 64,
        "temperature": 0,
        "stream": True,
    }
    started = time.perf_counter()
    first = last = 0.0
    chunks = 0
    with client.stream("POST", "/v1/chat/completions", json=body) as reply:
        reply.raise_for_status()
        for line in reply.iter_lines():
            if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                last = time.perf_counter()
                first = first or last
                chunks += 1
    return {"ttft_ms": (first - started) * 1000, "ms_per_token": (last - first) * 1000 / max(chunks - 1, 1)}


def fairness(client: httpx.Client, texts: list[str], seconds: float, streams: int) -> dict[str, Any]:
    alone = [chat_stream(client) for _ in range(streams)]
    embedding_alone = summary(http_run(client, texts, 256, seconds), 256)
    stop = threading.Event()
    during: list[float] = []

    def load() -> None:
        with httpx.Client(base_url=str(client.base_url), headers=client.headers, timeout=600) as own:
            while not stop.is_set():
                during.extend(http_run(own, texts, 256, 0.0))

    thread = threading.Thread(target=load)
    thread.start()
    time.sleep(2)  # the load is running
    try:
        beside = [chat_stream(client) for _ in range(streams)]
    finally:
        stop.set()
        thread.join()

    def med(rows: list[dict[str, float]], key: str) -> float:
        return float(np.median([r[key] for r in rows]))

    return {
        "chat_alone": {"ttft_ms": med(alone, "ttft_ms"), "ms_per_token": med(alone, "ms_per_token")},
        "chat_beside_embeddings": {"ttft_ms": med(beside, "ttft_ms"), "ms_per_token": med(beside, "ms_per_token")},
        "embeddings_alone": embedding_alone,
        "embeddings_beside_chat": summary(during, 256) if during else {},
    }


def table(cells: dict[str, Any]) -> str:
    rows = [
        "| inputs per request | reference sent/s | gatewright sent/s | ratio | reference p50 / p99 ms "
        "| gatewright p50 / p99 ms | sent per CPU-s: reference / gatewright (ratio) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, cell in cells.items():
        ref, gw = cell["reference"], cell["gatewright"]
        rows.append(
            f"| {n} | {ref['sentences_per_s']:.0f} | {gw['sentences_per_s']:.0f} | {cell['ratio']['value']:.0%} "
            f"| {ref['p50_ms']:.1f} / {ref['p99_ms']:.1f} | {gw['p50_ms']:.1f} / {gw['p99_ms']:.1f} "
            f"| {ref['sentences_per_cpu_s']:.0f} / {gw['sentences_per_cpu_s']:.0f} "
            f"({cell['ratio']['per_cpu_second']:.0%}) |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seconds", type=float, help="per cell and round (default 15; quick 2)")
    parser.add_argument("--rounds", type=int, help="turns per cell (default 2; quick 1)")
    parser.add_argument("--only", choices=("throughput", "fairness"), help="one part only")
    parser.add_argument("--sizes", default="1,16,256", help="inputs per request (default 1,16,256)")
    parser.add_argument(
        "--ref-threads",
        default=f"1,{os.cpu_count() or 1}",
        help="the reference's intra-op thread counts to try (default 1 and one per core; on a busy machine "
        "PyTorch's spinning threads collapse, so 1 alone saves time)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    seconds = args.seconds or (2.0 if args.quick else 15.0)
    rounds = args.rounds or (1 if args.quick else 2)

    from gatewright.backends.weights import PACKAGED_DIRS

    texts = corpus()
    direct = Direct(PACKAGED_DIRS[MODEL].verified_directory()) if args.only != "fairness" else None
    gateway, key = start_gateway()
    results: dict[str, Any] = {"seconds": seconds, "rounds": rounds}
    try:
        headers = {"authorization": f"Bearer {key}"}
        with httpx.Client(base_url=gateway.url, headers=headers, timeout=600) as client:
            http_run(client, texts, 16, 1.0)  # warm
            if direct is not None:
                results["reference"] = direct.info
                sizes = tuple(int(x) for x in args.sizes.split(","))
                ref_threads = tuple(int(x) for x in args.ref_threads.split(","))
                results["throughput"] = throughput(direct, client, gateway, texts, seconds, rounds, sizes, ref_threads)
                direct.close()
            if args.only != "throughput":
                results["fairness"] = fairness(client, texts, seconds, 2 if args.quick else 5)
    finally:
        gateway.stop()
        if direct is not None and direct.process.poll() is None:
            direct.process.kill()
    out = procs.ROOT / "bench" / "results" / f"embeddings-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    if "throughput" in results:
        print(table(results["throughput"]))
    if "fairness" in results:
        print(json.dumps(results["fairness"], indent=1))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
