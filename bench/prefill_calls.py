"""What a llama.cpp call costs the embedded engine while it reads prompts (issue 23), on the model
alone: no gateway, no scheduler, one thread, thread CPU per ``llama_decode``.

python -m bench.prefill_calls [--reps 3] [--json out.json]
python -m bench.prefill_calls --exact 40 [--min-tail 8] [--seed 5] [--threads 2]

1. One sequence, a call of n rows (the last with logits, as a prompt's last call), at position 128.
2. Eight 144-token prompts read as the engine read them up to 6ea51a5 (a 128-token chunk to the
   reuse boundary, then the last 16 tokens, each a call of its own), each in one call (the engine
   since, for 8 tokens or more past the boundary), and with the pieces of several prompts in one
   call: the CPU of the whole reading, and whether every prompt's last logits stayed the same bits.

``--exact N`` instead checks the engine's one-call read (``WHOLE_TAIL``) on N random prompts:
each read in one call when it ends ``--min-tail`` tokens or more past its reuse boundary, against
the two-call reading, and a longer prompt reusing the cells one call wrote against reading it
fresh; with ``--min-tail 2`` the short tails show how they differ.
"""

from __future__ import annotations

import argparse
import json
import random
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


def read_prompt(probe: Probe, seq: int, prompt: list[int], start: int, chunk: int, min_tail: int) -> np.ndarray:
    """Read as the engine does from an aligned ``start`` (granularity 16): chunks to the reuse
    boundary, then the last call; the rest in one call when it fits in the chunk and ends
    ``min_tail`` tokens or more past the boundary. The last token's logits."""
    boundary, position = (len(prompt) - 2) // 16 * 16, start
    while position < boundary and not (len(prompt) - boundary >= min_tail and len(prompt) - position <= chunk):
        end = min(position + chunk, boundary)
        probe.decode([(prompt[position:end], position, seq, False)])
        position = end
    _, rows = probe.decode([(prompt[position:], position, seq, True)])
    return probe.model.logits(rows[0]).copy()


def exactness(probe: Probe, cases: int, min_tail: int, seed: int) -> None:
    rng, same = random.Random(seed), 0
    text = probe.base * 2
    for _ in range(cases):
        length = rng.randint(20, 300)
        while (length - 2) % 16 + 2 < min_tail:
            length += 1
        prompt, longer = text[:length], text[: length + rng.randint(3, 60)]
        probe.model.forget(0)
        apart = read_prompt(probe, 0, prompt, 0, rng.choice([16, 48, 128, 512]), min_tail=1 << 30)
        probe.model.forget(0)
        together = read_prompt(probe, 0, prompt, 0, rng.choice([32, 64, 512]), min_tail)
        reused = min(length, len(longer) - 2) // 16 * 16  # the longer prompt reuses these cells
        probe.model.forget(0, reused)
        extended = read_prompt(probe, 0, longer, reused, 512, min_tail)
        probe.model.forget(1)
        fresh = read_prompt(probe, 1, longer, 0, rng.choice([16, 128, 512]), min_tail)
        checks = {len(prompt): np.array_equal(apart, together), len(longer): np.array_equal(extended, fresh)}
        same += all(checks.values())
        for tokens, ok in checks.items():
            if not ok:
                print(f"  differs: a prompt of {tokens} tokens, {tokens - (tokens - 2) // 16 * 16} past its boundary")
    print(f"one-call read at {min_tail}+ tokens past the boundary: {same} of {cases} the same bits")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--exact", type=int, metavar="N", help="check the one-call read on N random prompts")
    parser.add_argument("--min-tail", type=int, default=8)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    probe = Probe(args.threads)
    if args.exact:
        exactness(probe, args.exact, args.min_tail, args.seed)
        probe.model.close()
        return
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
