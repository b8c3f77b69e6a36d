"""The embedding model's reference implementation, called directly in its own process: the
baseline of bench/embeddings.py. sentence-transformers on PyTorch (CPU, one intra-op thread per
core) loads the very model directory gatewright installs, and stays loaded between commands (one
JSON object per line on stdin, one JSON answer per line):

- ``{"op": "run", "texts": [...], "n": N, "seconds": S, "batch_size": B, "threads": T}``: ``encode``
  the texts N at a time on T intra-op threads, back to back, for S seconds; answers every call's
  latency in seconds.

    bench/.venv-embed-ref/bin/python bench/embeddings_direct.py MODEL_DIR

Runs in bench/.venv-embed-ref (PyTorch), so it imports nothing from gatewright.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any


def main(model_dir: str) -> None:
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(os.cpu_count() or 1)
    model = SentenceTransformer(model_dir, device="cpu")
    print(json.dumps({"ready": True, "torch": torch.__version__, "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        command: dict[str, Any] = json.loads(line)
        texts: list[str] = command["texts"]
        n, seconds, batch_size = int(command["n"]), float(command["seconds"]), int(command["batch_size"])
        torch.set_num_threads(int(command.get("threads") or os.cpu_count() or 1))
        model.encode(texts[:n], batch_size=batch_size)  # warm
        latencies: list[float] = []
        offset = 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds or len(latencies) < 3:
            batch = [texts[(offset + i) % len(texts)] for i in range(n)]
            offset += n
            t0 = time.perf_counter()
            vectors = model.encode(batch, batch_size=batch_size, convert_to_numpy=True)
            latencies.append(time.perf_counter() - t0)
            assert vectors.shape[0] == n
        print(json.dumps({"latencies": latencies}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
