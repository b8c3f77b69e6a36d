"""llama.cpp's OpenMP threads spin briefly before they sleep (``backends.openmp``): set before
libgomp loads, in the order the gateway imports its modules, and never over an operator's own."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")

# The app first (it loads no llama.cpp), then the engine's backends as the registry loads them.
PROBE = (
    "import os, gatewright.app\n"
    "print('libgomp' in open('/proc/self/maps').read())\n"
    "import gatewright.backends.llamacpp.backend, gatewright.backends.embedder.backend\n"
    "print(os.environ.get('GOMP_SPINCOUNT'), 'libgomp' in open('/proc/self/maps').read())\n"
)


def probe(**extra: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env={**env, **extra}, capture_output=True, text=True, timeout=120, check=True
    )
    return done.stdout.split()


def test_the_spin_count_is_set_before_libgomp_loads() -> None:
    assert probe() == ["False", "1000", "True"]


def test_an_operators_setting_is_kept() -> None:
    assert probe(GOMP_SPINCOUNT="50000")[1] == "50000"
    assert probe(OMP_WAIT_POLICY="passive")[1] == "None"
