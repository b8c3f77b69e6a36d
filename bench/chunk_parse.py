"""CPU per upstream chunk of the OpenAI-compatible parser (``OpenAICompatBackend.streamed``), with
its learned-template short way (``TextTemplate``) on and off, in one process, alternating rounds.

The input is the mock upstream's own stream (``bench.mock_upstream.sse_frames``: role chunk, one
chunk per token, finish, usage, ``[DONE]``), one line per network read as a real upstream that sends
tokens as it makes them delivers it; a streaming request (each token its own event).

python -m bench.chunk_parse [--tokens 16] [--streams 3000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections import deque
from collections.abc import AsyncIterator

from bench.mock_upstream import MockConfig, sse_frames
from gatewright.backends.openai_compat import OpenAICompatBackend
from gatewright.core.backend import CallContext
from gatewright.core.catalog import parse_catalog
from gatewright.core.types import CoreRequest, Message, TextPart


class _Answer:
    def __init__(self, lines: list[bytes]) -> None:
        self._lines = lines

    async def line_batches(self) -> AsyncIterator[deque[bytes]]:
        for line in self._lines:
            yield deque((line,))


async def _round(backend: OpenAICompatBackend, lines: list[bytes], streams: int) -> float:
    request = CoreRequest(model="m", messages=(Message("user", (TextPart("hi"),)),), stream=True)
    started = time.process_time()
    for _ in range(streams):
        async for _event in backend.streamed(_Answer(lines), CallContext("r"), request):  # type: ignore[arg-type]
            pass
    return time.process_time() - started


async def measure(tokens: int, streams: int, rounds: int) -> dict[str, list[float]]:
    entry = {"id": "m", "context_window": 2048, "max_output": 128, "backend": "openai", "base_url": "http://x/v1"}
    model = parse_catalog({"models": [entry]}).entries[0]
    backend = OpenAICompatBackend(model.deployments[0], model)
    frames = sse_frames("m", tokens, "stop", True, MockConfig(tokens=tokens))
    lines = [line for frame in frames for line in frame.split(b"\n") if line]
    out: dict[str, list[float]] = {"general": [], "template": []}
    for _ in range(rounds):
        for name, learns in (("general", 0), ("template", 4)):
            backend.template_learns = learns
            out[name].append(1e6 * await _round(backend, lines, streams) / (streams * len(lines)))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--streams", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    result = asyncio.run(measure(args.tokens, args.streams, args.rounds))
    pairs = [t / g - 1 for g, t in zip(result["general"], result["template"], strict=True)]
    for name, values in result.items():
        print(f"{name:9} {statistics.median(values):6.2f} µs/line ({', '.join(f'{v:.2f}' for v in values)})")
    worse = sum(p > 0 for p in pairs)
    change = 100 * statistics.median(pairs)
    print(f"template vs general: {change:+.1f} % median of pairs, {worse} of {len(pairs)} worse")


if __name__ == "__main__":
    main()
