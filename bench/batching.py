"""Concurrent requests on one model: gatewright's embedded engine (continuous batching) against
``llama_cpp.server`` (one request at a time) and llama.cpp's C++ ``llama-server -np N``; same GGUF,
threads and context per sequence, greedy decoding, the engines interleaved and rotated every
repetition.

Measured:
- aggregate output tokens/s at each concurrency (N streams of distinct prompts sent together;
  output tokens / time from the first request sent to the last stream ended), and the server's
  CPU time per output token (all its threads, prompt included: its work, which a busy machine's
  load changes far less than the wall-clock rate);
- TTFT p50/p99 at concurrency 4 with mixed prompt lengths (short to 2,000 tokens);
- inter-token latency of running streams while a 2,000-token prompt joins (the gaps between the
  content chunks of 3 streams from the moment the long request is sent until its first token);
- TTFT of a cached 2,000-token prefix (a second question after the first).
Every output is counted with the model's own tokenizer.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from bench import envs, procs
from bench.engine import code_lines, nonce

log = logging.getLogger("bench.batching")

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class BatchingConfig:
    reps: int = 3
    concurrency: tuple[int, ...] = (1, 2, 4, 8)
    parallel: int = 8  # slots of gatewright and llama-server
    max_tokens: int = 64
    code_tokens: int = 100  # size of the code in the throughput prompt
    mixed_tokens: tuple[int, ...] = (100, 400, 1000, 2000)
    join_tokens: int = 2000
    running_tokens: int = 160  # length of the streams running when the long prompt joins
    threads: int = 2
    n_ctx: int = 4096  # per sequence
    parts: tuple[str, ...] = ("throughput", "mixed", "join", "cache")
    baseline: str | None = None  # another checkout: its gatewright runs beside this one, interleaved
    baseline_label: str = "before"


class Counter:
    """The model's tokenizer (vocabulary only) in this process."""

    def __init__(self, model: Path) -> None:
        from llama_cpp import Llama

        self.llm = Llama(model_path=str(model), vocab_only=True, verbose=False)

    def count(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode(), add_bos=False, special=False))


def sized_code(counter: Counter, tokens: int) -> str:
    per_line = counter.count(code_lines(50)) / 50
    return code_lines(max(1, round(tokens / per_line)))


def rewrite_prompt(code: str) -> Messages:
    return [
        {"role": "system", "content": f"Session {nonce()}. You are a careful senior Python engineer."},
        {"role": "user", "content": f"```python\n{code}```\nRewrite this module with type hints and docstrings."},
    ]


async def stream(client: httpx.AsyncClient, url: str, messages: Messages, max_tokens: int) -> dict[str, Any]:
    """One streamed chat completion; the arrival time of every content chunk."""
    body = {"model": "local", "messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    started = time.perf_counter()
    times: list[float] = []
    parts: list[str] = []
    async with client.stream("POST", url, json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{url} answered {response.status_code}: {(await response.aread())[:300]!r}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            for choice in json.loads(line[6:]).get("choices") or ():
                content = (choice.get("delta") or {}).get("content")
                if content:
                    times.append(time.perf_counter())
                    parts.append(content)
    return {"started": started, "times": times, "end": time.perf_counter(), "text": "".join(parts)}


@dataclass
class Peer:
    name: str
    service: procs.Service
    batches: bool  # decodes several sequences together

    @property
    def url(self) -> str:
        return self.service.url + "/v1/chat/completions"


def start_peers(config: BatchingConfig, model: Path) -> list[Peer]:
    peers: list[Peer] = []
    procs.TMP.mkdir(parents=True, exist_ok=True)
    try:
        catalog = procs.local_catalog(
            model, config.threads, config.n_ctx, procs.TMP / "catalog-batching.toml", config.parallel
        )
        gateway = procs.start_gatewright("gatewright-batching", catalog, platform=False)
        peers.append(Peer("gatewright", gateway, True))
        if config.baseline is not None:
            checkout = Path(config.baseline)
            before = procs.start_gatewright("gatewright-batching-before", catalog, platform=False, checkout=checkout)
            peers.append(Peer(f"gatewright @{config.baseline_label}", before, True))
        binary = envs.llama_server()
        server = procs.start_llama_server(binary, model, config.threads, config.n_ctx, config.parallel)
        peers.append(Peer(f"llama-server -np {config.parallel}", server, True))
        python = Path(sys.executable).parent.parent  # llama-cpp-python[server] is a dev dependency
        serial = procs.start_llamacpp_server(python, model, config.threads, config.n_ctx)
        peers.append(Peer("llama_cpp.server", serial, False))
    except BaseException:
        for peer in peers:
            peer.service.stop()
        raise
    return peers


async def together(url: str, prompts: list[Messages], max_tokens: int) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(1800.0)) as client:
        return list(await asyncio.gather(*(stream(client, url, p, max_tokens) for p in prompts)))


def throughput(peer: Peer, counter: Counter, code: str, concurrency: int, max_tokens: int) -> dict[str, Any]:
    cpu = peer.service.cpu_seconds()
    results = asyncio.run(together(peer.url, [rewrite_prompt(code) for _ in range(concurrency)], max_tokens))
    cpu = peer.service.cpu_seconds() - cpu  # the server's work, whatever the machine's load
    begin = min(r["started"] for r in results)
    makespan = max(r["end"] for r in results) - begin
    tokens = [counter.count(r["text"]) for r in results]
    return {
        "output_tokens": tokens,
        "makespan_s": makespan,
        "aggregate_tps": sum(tokens) / makespan,
        "cpu_s": cpu,
        "ttft_s": [r["times"][0] - r["started"] if r["times"] else None for r in results],
    }


def mixed(peer: Peer, codes: list[str], max_tokens: int) -> list[float]:
    """TTFT of each of len(codes) requests of different prompt lengths sent together."""
    results = asyncio.run(together(peer.url, [rewrite_prompt(code) for code in codes], max_tokens))
    return [r["times"][0] - r["started"] for r in results if r["times"]]


def join(peer: Peer, short: str, long: str, config: BatchingConfig) -> dict[str, Any]:
    return asyncio.run(_join(peer.url, short, long, config))


async def _join(url: str, short: str, long: str, config: BatchingConfig) -> dict[str, Any]:
    """Three streams run; once each has its first token, a long prompt joins."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(1800.0)) as client:
        first_tokens = [asyncio.Event() for _ in range(3)]
        running = [
            asyncio.create_task(_stream_signalling(client, url, rewrite_prompt(short), config.running_tokens, event))
            for event in first_tokens
        ]
        await asyncio.gather(*(event.wait() for event in first_tokens))
        sent = time.perf_counter()
        joined = await stream(client, url, rewrite_prompt(long), 4)
        results = await asyncio.gather(*running)
    first = joined["times"][0] if joined["times"] else joined["end"]
    gaps = []
    for result in results:
        times = result["times"]
        gaps += [b - a for a, b in itertools.pairwise(times) if b > sent and a < first]
    before = []
    for result in results:
        times = [t for t in result["times"] if t < sent]
        before += [b - a for a, b in itertools.pairwise(times)]
    return {
        "long_ttft_s": first - sent,
        "gaps_during_join_s": gaps,
        "gaps_before_join_s": before,
        "running_tokens_during_join": len(gaps),
    }


async def _stream_signalling(
    client: httpx.AsyncClient, url: str, messages: Messages, max_tokens: int, first: asyncio.Event
) -> dict[str, Any]:
    body = {"model": "local", "messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    started = time.perf_counter()
    times: list[float] = []
    async with client.stream("POST", url, json=body) as response:
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            for choice in json.loads(line[6:]).get("choices") or ():
                if (choice.get("delta") or {}).get("content"):
                    times.append(time.perf_counter())
                    first.set()
    first.set()
    return {"started": started, "times": times}


def cached_prefix(peer: Peer, prefix: str) -> dict[str, float]:
    system = {"role": "system", "content": f"Session {nonce()}. Answer questions about this code.\n{prefix}"}

    def ask(question: str) -> float:
        messages = [system, {"role": "user", "content": question}]
        result = asyncio.run(together(peer.url, [messages], 2))[0]
        return float(result["times"][0] - result["started"]) if result["times"] else float("nan")

    return {"cold_s": ask("What does function_3 return? One line."), "cached_s": ask("And function_7? One line.")}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[rank]


def run_batching(config: BatchingConfig, model: Path) -> dict[str, Any]:
    load_start = os.getloadavg()  # the machine is shared: say how busy it was
    counter = Counter(model)
    peers = start_peers(config, model)
    try:
        code = sized_code(counter, config.code_tokens)
        codes = [sized_code(counter, n) for n in config.mixed_tokens]
        short, long = sized_code(counter, 60), sized_code(counter, config.join_tokens)
        for peer in peers:  # warm-up
            asyncio.run(together(peer.url, [rewrite_prompt(code_lines(3))], 4))
        rows: list[dict[str, Any]] = []
        for rep in range(config.reps):
            shift = rep % len(peers)
            order = peers[shift:] + peers[:shift]
            for concurrency in config.concurrency if "throughput" in config.parts else ():
                for peer in order:
                    result = throughput(peer, counter, code, concurrency, config.max_tokens)
                    rows.append({"rep": rep, "part": "throughput", "c": concurrency, "peer": peer.name, **result})
                    log.info("rep %d c=%d %-22s %.1f tok/s", rep, concurrency, peer.name, result["aggregate_tps"])
            for peer in order if "mixed" in config.parts else ():
                ttfts = mixed(peer, codes, 16)
                rows.append({"rep": rep, "part": "mixed", "peer": peer.name, "ttft_s": ttfts})
                log.info("rep %d mixed %-22s ttft %s", rep, peer.name, " ".join(f"{t:.2f}" for t in ttfts))
            for peer in order if "join" in config.parts else ():
                if not peer.batches:
                    continue  # its three streams run one after another: nothing runs while it prefills
                joined = join(peer, short, long, config)
                rows.append({"rep": rep, "part": "join", "peer": peer.name, **joined})
                log.info(
                    "rep %d join %-22s long ttft %.2fs, running-stream gap p99 %.2fs (%d tokens during join)",
                    rep,
                    peer.name,
                    joined["long_ttft_s"],
                    percentile(joined["gaps_during_join_s"], 99),
                    joined["running_tokens_during_join"],
                )
            for peer in order if "cache" in config.parts else ():
                cache = cached_prefix(peer, long)
                rows.append({"rep": rep, "part": "cache", "peer": peer.name, **cache})
                log.info(
                    "rep %d cache %-22s cold %.2fs cached %.2fs", rep, peer.name, cache["cold_s"], cache["cached_s"]
                )
        return {
            "config": asdict(config),
            "peers": [p.name for p in peers],
            "rows": rows,
            "load_average": {"start": load_start, "end": os.getloadavg()},
        }
    finally:
        for peer in peers:
            peer.service.stop()


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """Medians and spreads per peer, and gatewright's share of llama-server's throughput."""
    rows, peers = result["rows"], result["peers"]
    out: dict[str, Any] = {"throughput": {}, "mixed": {}, "join": {}, "cache": {}}
    for concurrency in result["config"]["concurrency"]:
        cell = {}
        for peer in peers:
            values = [
                r["aggregate_tps"]
                for r in rows
                if r["part"] == "throughput" and r["c"] == concurrency and r["peer"] == peer
            ]
            cpu = [
                1000 * r["cpu_s"] / max(1, sum(r["output_tokens"]))
                for r in rows
                if r["part"] == "throughput" and r["c"] == concurrency and r["peer"] == peer and "cpu_s" in r
            ]
            cell[peer] = (
                {
                    "median": statistics.median(values),
                    "min": min(values),
                    "max": max(values),
                    # the server's CPU time per output token: its work, which the machine's load
                    # changes far less than the wall-clock rate
                    "cpu_ms_per_token": statistics.median(cpu) if cpu else None,
                }
                if values
                else None
            )
        out["throughput"][concurrency] = cell
    for peer in peers:
        ttfts = [t for r in rows if r["part"] == "mixed" and r["peer"] == peer for t in r["ttft_s"]]
        if ttfts:
            out["mixed"][peer] = {"p50": percentile(ttfts, 50), "p99": percentile(ttfts, 99), "n": len(ttfts)}
        joins = [r for r in rows if r["part"] == "join" and r["peer"] == peer]
        if joins:
            during = [g for r in joins for g in r["gaps_during_join_s"]]
            before = [g for r in joins for g in r["gaps_before_join_s"]]
            out["join"][peer] = {
                "gap_p99_during": percentile(during, 99),
                "gap_max_during": max(during, default=float("nan")),
                "gap_p50_before": percentile(before, 50),
                "long_ttft_median": statistics.median(r["long_ttft_s"] for r in joins),
            }
        caches = [r for r in rows if r["part"] == "cache" and r["peer"] == peer]
        if caches:
            out["cache"][peer] = {
                "cold_median": statistics.median(r["cold_s"] for r in caches),
                "cached_median": statistics.median(r["cached_s"] for r in caches),
                "cached_all": [r["cached_s"] for r in caches],
            }
    return out


def main() -> None:
    import argparse

    from bench.run import baseline_worktree, model_path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--concurrency", default="1,2,4,8")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads of every peer")
    parser.add_argument("--parts", default="throughput,mixed,join,cache")
    parser.add_argument("--out", type=Path, default=procs.ROOT / "bench" / "results" / "batching.json")
    parser.add_argument("--baseline-commit", help="a commit whose gatewright runs beside this one (a git worktree)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    config = BatchingConfig(
        reps=args.reps,
        concurrency=tuple(int(c) for c in args.concurrency.split(",")),
        max_tokens=args.max_tokens,
        threads=args.threads,
        parts=tuple(args.parts.split(",")),
        baseline=str(baseline_worktree(args.baseline_commit)) if args.baseline_commit else None,
        baseline_label=args.baseline_commit or "before",
    )
    result = run_batching(config, model_path())
    result["summary"] = summary(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, allow_nan=True))
    print(json.dumps(result["summary"], indent=1))


if __name__ == "__main__":
    main()
