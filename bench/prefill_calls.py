"""What a llama.cpp call costs the embedded engine while it reads prompts (issue 23), on the model
alone: no gateway, no scheduler, one thread, thread CPU per ``llama_decode``.

python -m bench.prefill_calls [--reps 3] [--json out.json]

1. One sequence, a call of n rows (the last with logits, as a prompt's last call), at position 128.
2. Eight 144-token prompts read as the engine read them up to 6ea51a5 (a 128-token chunk to the
   reuse boundary, then the last 16 tokens, each a call of its own), each in one call (the engine
   since, for 8 tokens or more past the boundary), and with the pieces of several prompts in one
   call: the CPU of the whole reading, and whether every prompt's last logits stayed the same bits.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from gatewright.backends.llamacpp._internals import Batch, Model
from gatewright.backends.weights import assemble

ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
PROMPT, HEAD = 144, 128  # the engine reads [0, 128) then [128, 144) (granularity 16)
REUSED = 5  # pieces ending here are the cells a slot already holds: read, but not counted
WORDS = [
    "copper",
    "meadow",
    "harbor",
    "violet",
    "thunder",
    "canyon",
    "lantern",
    "orchard",
    "quarry",
    "ferry",
    "kettle",
    "bell",
]

Piece = tuple[int, int, int]  # sequence, start, end
Plan = list[list[Piece]]  # the calls, each a list of pieces


def plans(prompts: int) -> dict[str, Plan]:
    seqs = range(prompts)
    chunks, tails = [(s, 0, HEAD) for s in seqs], [(s, HEAD, PROMPT) for s in seqs]
    apart = [[piece] for piece in chunks + tails]
    return {
        "chunk, then last call (6ea51a5)": apart,
        "one call each (the engine now)": [[(s, 0, PROMPT)] for s in seqs],
        "two prompts per call": [[(s, 0, PROMPT) for s in (i, i + 1)] for i in range(0, prompts, 2)],
        # as llama-server: its slot's previous prompt shared the first five tokens (not the same
        # bits: these five cells come from a call of five rows)
        "one call each, five tokens reused": [[(s, 0, REUSED)] for s in seqs] + [[(s, REUSED, PROMPT)] for s in seqs],
        "chunks two per call": [chunks[i : i + 2] for i in range(0, prompts, 2)] + [[tail] for tail in tails],
        "chunks four per call": [chunks[i : i + 4] for i in range(0, prompts, 4)] + [[tail] for tail in tails],
        "chunks four per call, tails in one": [chunks[i : i + 4] for i in range(0, prompts, 4)] + [tails],
    }


class Probe:
    def __init__(self, threads: int) -> None:
        path = assemble("qwen2.5-coder-0.5b-instruct", Path.home() / ".cache" / "gatewright" / "models")
        self.model = Model(str(path), n_ctx=8192, slots=8, n_threads=threads, n_batch=512)
        self.batch = Batch(512)
        text = " ".join(f"{WORDS[i % len(WORDS)]}{i % 7}" for i in range(400))
        self.base = self.model.tokenize(text)
        self.prompts = [
            self.model.tokenize(" ".join(f"{WORDS[(i + j) % len(WORDS)]}{i * j % 7}" for j in range(200)))[:PROMPT]
            for i in range(8)
        ]

    def decode(self, pieces: list[tuple[list[int], int, int, bool]]) -> tuple[float, list[int]]:
        """One call; thread CPU seconds and the row of each piece's last token."""
        self.batch.clear()
        rows = [self.batch.add(tokens, start, seq, logits) for tokens, start, seq, logits in pieces]
        began = time.thread_time()
        self.model.decode(self.batch)
        return time.thread_time() - began, rows

    def call_cost(self, rows: int) -> float:
        self.model.forget(0)
        self.decode([(self.base[:128], 0, 0, False)])
        return self.decode([(self.base[128 : 128 + rows], 128, 0, True)])[0]

    def read(self, plan: Plan) -> tuple[float, dict[int, np.ndarray]]:
        for seq in range(8):
            self.model.forget(seq)
        cpu, logits = 0.0, {}
        for call in plan:
            spent, rows = self.decode([(self.prompts[s][a:b], a, s, b == PROMPT) for s, a, b in call])
            cpu += spent if call[0][2] != REUSED else 0.0
            for (seq, _, end), row in zip(call, rows, strict=True):
                if end == PROMPT:
                    logits[seq] = self.model.logits(row).copy()
        return cpu, logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    probe = Probe(args.threads)
    costs = {rows: min(probe.call_cost(rows) for _ in range(3)) * 1000 for rows in ROWS}
    print("one sequence, a call of n rows (ms, thread CPU, best of 3):")
    for rows, ms in costs.items():
        print(f"  {rows:4d} rows: {ms:7.1f} ms, {ms / rows:5.1f} ms a row")
    variants = plans(8)
    _, reference = probe.read(variants["chunk, then last call (6ea51a5)"])
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    identical: dict[str, bool] = {}
    for _ in range(args.reps):  # the variants alternate, so drift hits each alike
        for name, plan in variants.items():
            spent, logits = probe.read(plan)
            cpu[name].append(spent)
            same = all(np.array_equal(logits[seq], reference[seq]) for seq in reference)
            identical[name] = identical.get(name, True) and same
    print(f"eight {PROMPT}-token prompts ({args.reps} repetitions, alternating; CPU seconds to read them all):")
    for name, values in cpu.items():
        print(
            f"  {name:36s} median {statistics.median(values):5.2f} s  "
            f"({', '.join(f'{v:.2f}' for v in values)})  same logits: {identical[name]}"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "threads": args.threads,
                    "call_ms": costs,
                    "read_eight_s": cpu,
                    "identical": identical,
                    "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                },
                indent=2,
            )
        )
    probe.model.close()


if __name__ == "__main__":
    main()
