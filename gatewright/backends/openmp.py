"""How long llama.cpp's threads spin before they sleep: briefly.

After every operation of a graph, llama.cpp's threads meet at an OpenMP barrier, and libgomp's
threads spin 300,000 times before they sleep. On a 2-core machine where anything else runs (the
gateway's own event loop, a test runner), the thread that arrived first spins while the one it
waits for is not running at all: 48 tokens of the embedded model took 16.7 s with one core busy,
where spinning 1,000 times took 4.2 s; on a quiet machine both took 2.0 s. libgomp reads the
setting once, when it loads (with llama.cpp), so the packages that import llama_cpp call this
first. An operator's own ``GOMP_SPINCOUNT`` (or ``OMP_WAIT_POLICY``) is left as it is.
"""

from __future__ import annotations

import os

SPIN_COUNT = "1000"


def spin_briefly() -> None:
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)
