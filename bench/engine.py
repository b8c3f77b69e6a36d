"""Embedded engine: gatewright's local backend (over its HTTP API) against llama-cpp-python called
directly in-process and against ``python -m llama_cpp.server``: same GGUF, threads, context size and
prompts, greedy decoding (so every engine writes the same tokens), interleaved engine by engine.

Measured per request: time to first token (TTFT), prompt tokens/s (prompt tokens / TTFT, on a prompt
no engine has cached), generation tokens/s (tokens after the first / time from first to last token);
at concurrency 4 also the aggregate output tokens/s. Every output is counted with the same tokenizer.
Prompt cache: TTFT for a long shared prefix, first with a prefix no engine has seen (cold), then with
the same prefix and another question (cached).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from bench import procs
from bench.load import PeakRss

log = logging.getLogger("bench.engine")

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class EngineConfig:
    reps: int = 3
    max_tokens: int = 64
    code_tokens: int = 200  # size of the code in the speed prompt
    prefix_tokens: int = 2000  # shared prefix of the prompt-cache runs
    cache_reps: int = 2
    threads: int = 2
    n_ctx: int = 8192
    concurrency: tuple[int, ...] = (1, 4)


class DirectProcess:
    """``bench.engine_direct`` in its own process; one JSON command at a time."""

    def __init__(self, model: Path, threads: int, n_ctx: int) -> None:
        argv = [sys.executable, "-m", "bench.engine_direct", "--model", str(model)]
        argv += ["--threads", str(threads), "--n-ctx", str(n_ctx)]
        self.process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=procs.ROOT, start_new_session=True
        )
        ready = self._read()
        if not ready.get("ready"):
            raise RuntimeError(f"engine_direct did not start: {ready}")

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"engine_direct exited with {self.process.wait()}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"engine_direct: {answer['error']}")
        return answer

    def call(self, **command: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self._read()

    def rss_mb(self) -> float:
        return procs.rss_kb(self.process.pid) / 1024

    def stop(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# ---------------------------------------------------------------------------------------------------
# prompts


def code_lines(count: int) -> str:
    return "".join(f"def function_{i}(x):\n    return x * {i} + {i * 7 % 13}\n\n" for i in range(count))


def sized_code(direct: DirectProcess, tokens: int) -> str:
    """Code of about ``tokens`` tokens (lines are near-identical, so their cost is linear)."""
    per_line = direct.call(op="tokens", text=code_lines(50))["count"] / 50
    return code_lines(max(1, round(tokens / per_line)))


def nonce() -> str:
    return f"{random.randrange(10**7, 10**8)}"  # fixed length: every engine sees the same token count


def speed_prompt(code: str) -> Messages:
    return [
        {"role": "system", "content": f"Session {nonce()}. You are a careful senior Python engineer."},
        {
            "role": "user",
            "content": f"```python\n{code}```\nRewrite this module with type hints and a docstring for each function.",
        },
    ]


def cache_prompts(prefix: str) -> tuple[Messages, Messages]:
    system = {"role": "system", "content": f"Session {nonce()}. Answer questions about this code.\n{prefix}"}
    cold = [system, {"role": "user", "content": "What does function_3 return? One line."}]
    cached = [system, {"role": "user", "content": "What does function_7 return? One line."}]
    return cold, cached


# ---------------------------------------------------------------------------------------------------
# engines: each answers (messages, max_tokens) with timestamps on the shared monotonic clock


async def http_chat(client: httpx.AsyncClient, url: str, messages: Messages, max_tokens: int) -> dict[str, Any]:
    body = {
        "model": "local",
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first = last = 0.0
    parts: list[str] = []
    usage: dict[str, Any] | None = None
    async with client.stream("POST", url, json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{url} answered {response.status_code}: {(await response.aread())[:300]!r}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            usage = chunk.get("usage") or usage
            for choice in chunk.get("choices") or ():
                content = (choice.get("delta") or {}).get("content")
                if content:
                    last = time.perf_counter()
                    first = first or last
                    parts.append(content)
    return {"started": started, "first": first, "last": last, "end": time.perf_counter(), "text": "".join(parts)} | (
        {"usage": usage} if usage else {}
    )


@dataclass
class Engine:
    name: str
    url: str | None = None  # HTTP engines
    op: str | None = None  # direct engines: "chat" or "generate"
    service: procs.Service | None = None
    concurrent: bool = True  # False: one Llama object serves requests one after another

    def rss_mb(self, direct: DirectProcess) -> float:
        return self.service.rss_mb() if self.service is not None else direct.rss_mb()


async def run_batch(
    engine: Engine, direct: DirectProcess, batch: list[Messages], max_tokens: int
) -> list[dict[str, Any]]:
    if engine.url is not None:
        async with httpx.AsyncClient(timeout=httpx.Timeout(900.0)) as client:
            return list(await asyncio.gather(*(http_chat(client, engine.url, m, max_tokens) for m in batch)))
    return [direct.call(op=engine.op, messages=m, max_tokens=max_tokens) for m in batch]


def measure(results: list[dict[str, Any]], prompt_tokens: list[int], direct: DirectProcess) -> dict[str, Any]:
    begin = min(r["started"] for r in results)
    requests = []
    for result, prompt in zip(results, prompt_tokens, strict=True):
        out = direct.call(op="tokens", text=result["text"])["count"]
        first = result["first"] or result["end"]
        gen_time = result["last"] - first
        requests.append(
            {
                "prompt_tokens": prompt,
                "output_tokens": out,
                "ttft_s": first - result["started"],
                "ttft_from_batch_s": first - begin,
                "prompt_tps": prompt / (first - result["started"]),
                "gen_tps": (out - 1) / gen_time if out > 1 and gen_time > 0 else None,
                "total_s": result["end"] - result["started"],
                "reported_usage": result.get("usage"),
            }
        )
    makespan = max(r["end"] for r in results) - begin
    return {
        "requests": requests,
        "makespan_s": makespan,
        "aggregate_output_tps": sum(r["output_tokens"] for r in requests) / makespan,
    }


# ---------------------------------------------------------------------------------------------------


def start_engines(config: EngineConfig, model: Path, server_venv: Path) -> tuple[list[Engine], DirectProcess]:
    started: list[procs.Service] = []
    direct: DirectProcess | None = None
    try:
        catalog = procs.local_catalog(model, config.threads, config.n_ctx, procs.TMP / "catalog-local.toml")
        gateway = procs.start_gatewright("gatewright-local", catalog, platform=False)
        started.append(gateway)
        server = procs.start_llamacpp_server(server_venv, model, config.threads, config.n_ctx)
        started.append(server)
        direct = DirectProcess(model, config.threads, config.n_ctx)
    except BaseException:
        for service in started:
            service.stop()
        raise
    engines = [
        Engine("gatewright (HTTP)", url=gateway.url + "/v1/chat/completions", service=gateway),
        Engine("llama_cpp.server (HTTP)", url=server.url + "/v1/chat/completions", service=server),
        Engine("direct create_chat_completion", op="chat", concurrent=False),
        Engine("direct generate()", op="generate", concurrent=False),
    ]
    return engines, direct


def run_engine(config: EngineConfig, model: Path, server_venv: Path) -> dict[str, Any]:
    engines, direct = start_engines(config, model, server_venv)
    memory: dict[str, dict[str, float]] = {}
    try:
        code = sized_code(direct, config.code_tokens)
        prefix = sized_code(direct, config.prefix_tokens)
        for engine in engines:  # warm-up: load pages, build samplers, JIT nothing
            asyncio.run(run_batch(engine, direct, [speed_prompt(code_lines(3))], 4))
        time.sleep(1)
        for engine in engines:
            memory[engine.name] = {"idle_mb": engine.rss_mb(direct), "peak_mb": 0.0}
        speed: list[dict[str, Any]] = []
        for rep in range(config.reps):
            for concurrency in config.concurrency:
                batch = [speed_prompt(code) for _ in range(concurrency)]
                prompt_tokens = [direct.call(op="prompt_tokens", messages=m)["count"] for m in batch]
                shift = rep % len(engines)
                for engine in engines[shift:] + engines[:shift]:
                    if concurrency > 1 and engine.op == "generate":
                        continue  # same Llama as create_chat_completion, serial: adds nothing at 4
                    fresh = [_renonce(m) for m in batch]  # the direct engines share one Llama: no reuse
                    result = _timed(engine, direct, fresh, config.max_tokens, prompt_tokens, memory)
                    speed.append({"rep": rep, "concurrency": concurrency, "engine": engine.name, **result})
                    r0 = result["requests"][0]
                    log.info(
                        "rep %d c=%d %-30s ttft %.2fs prompt %.1f tok/s gen %s tok/s (%d tokens) agg %.1f tok/s",
                        rep,
                        concurrency,
                        engine.name,
                        r0["ttft_s"],
                        r0["prompt_tps"],
                        f"{r0['gen_tps']:.1f}" if r0["gen_tps"] else "-",
                        r0["output_tokens"],
                        result["aggregate_output_tps"],
                    )
        cache: list[dict[str, Any]] = []
        for rep in range(config.cache_reps):
            for engine in engines:
                if engine.op == "generate":
                    continue
                cold, cached = cache_prompts(prefix)
                counts = [direct.call(op="prompt_tokens", messages=m)["count"] for m in (cold, cached)]
                first = _timed(engine, direct, [cold], 2, counts[:1], memory)["requests"][0]
                second = _timed(engine, direct, [cached], 2, counts[1:], memory)["requests"][0]
                cache.append({"rep": rep, "engine": engine.name, "cold": first, "cached": second})
                log.info(
                    "cache rep %d %-30s %d-token prompt: cold %.2fs, cached %.2fs",
                    rep,
                    engine.name,
                    counts[0],
                    first["ttft_s"],
                    second["ttft_s"],
                )
        return {"config": asdict(config), "engines": [e.name for e in engines], "speed": speed, "cache": cache} | {
            "memory": memory
        }
    finally:
        direct.stop()
        for engine in engines:
            if engine.service is not None:
                engine.service.stop()


def _renonce(messages: Messages) -> Messages:
    """The same prompt behind a new session number (same token count, nothing cached)."""
    system, *rest = messages
    _, _, tail = system["content"].partition(". ")
    return [{"role": "system", "content": f"Session {nonce()}. {tail}"}, *rest]


def _timed(
    engine: Engine,
    direct: DirectProcess,
    batch: list[Messages],
    max_tokens: int,
    prompt_tokens: list[int],
    memory: dict[str, dict[str, float]],
) -> dict[str, Any]:
    if engine.service is not None:
        with PeakRss(engine.service) as peak:
            results = asyncio.run(run_batch(engine, direct, batch, max_tokens))
        memory[engine.name]["peak_mb"] = max(memory[engine.name]["peak_mb"], peak.peak)
    else:
        results = asyncio.run(run_batch(engine, direct, batch, max_tokens))
        memory[engine.name]["peak_mb"] = max(memory[engine.name]["peak_mb"], direct.rss_mb())
    return measure(results, prompt_tokens, direct)
