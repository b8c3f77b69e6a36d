"""The peers' own virtualenvs under ``bench/`` (gitignored), and wrk, installed on first use.

Each peer gets a virtualenv of its own so its dependencies (LiteLLM pins its own FastAPI and Starlette)
never touch gatewright's. Versions are pinned in ``bench/requirements-*.txt``; a venv is rebuilt when
its requirements file changes.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import sys
from pathlib import Path

from bench.procs import ROOT

log = logging.getLogger("bench.envs")

BENCH = ROOT / "bench"
VENVS = {
    "litellm": (BENCH / ".venv-litellm", BENCH / "requirements-litellm.txt"),
    "llamacpp": (BENCH / ".venv-llamacpp", BENCH / "requirements-llamacpp-server.txt"),
    "tools": (BENCH / ".venv-tools", BENCH / "requirements-tools.txt"),
    "embed-ref": (BENCH / ".venv-embed-ref", BENCH / "requirements-embeddings-ref.txt"),
}


def venv(name: str) -> Path:
    """The named venv, created and filled from its pinned requirements if missing or stale."""
    path, requirements = VENVS[name]
    stamp = path / ".requirements-sha256"
    wanted = hashlib.sha256(requirements.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == wanted:
        return path
    log.info("installing %s into %s (LiteLLM takes a few minutes)", requirements.name, path)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(path)], check=True)
    pip = [str(path / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    done = subprocess.run([*pip, "-r", str(requirements)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"installing {requirements.name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    stamp.write_text(wanted)
    return path


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    log.info("installing wrk from Debian packages")
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(install, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, check=True)
        subprocess.run(install, capture_output=True, check=True)
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("wrk is missing and could not be installed (apt-get install -y wrk)")
    return found
