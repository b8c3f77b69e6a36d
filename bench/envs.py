"""The peers' own virtualenvs under ``bench/`` (gitignored), and wrk, installed on first use.

Each peer gets a virtualenv of its own so its dependencies (LiteLLM pins its own FastAPI and Starlette)
never touch gatewright's. Versions are pinned in ``bench/requirements-*.txt``; a venv is rebuilt when
its requirements file changes.
"""

from __future__ import annotations

import hashlib
import logging
import os
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


CACHE = Path.home() / ".cache" / "gatewright-bench"


def llama_server() -> Path:
    """llama.cpp's C++ ``llama-server``, a benchmark peer (never a dependency): built once, outside
    the repository, from the llama.cpp sources vendored in the sdist of the llama-cpp-python that
    gatewright embeds (same llama.cpp version). Several minutes on 2 cores the first time."""
    from importlib.metadata import version

    binary = CACHE / "build" / "bin" / "llama-server"
    if binary.exists():
        return binary
    pinned = version("llama-cpp-python")
    name = f"llama_cpp_python-{pinned}"
    sources = CACHE / name / "vendor" / "llama.cpp"
    CACHE.mkdir(parents=True, exist_ok=True)
    if not sources.exists():
        log.info("downloading the llama-cpp-python %s sdist for its llama.cpp sources", pinned)
        pip = [sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps", "-d", str(CACHE)]
        subprocess.run([*pip, f"llama-cpp-python=={pinned}"], check=True)
        shutil.unpack_archive(CACHE / f"{name}.tar.gz", CACHE)
    log.info("building llama-server into %s (minutes)", CACHE / "build")
    configure = ["cmake", "-S", str(sources), "-B", str(CACHE / "build"), "-DCMAKE_BUILD_TYPE=Release"]
    configure += ["-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF"]
    configure += ["-DLLAMA_BUILD_SERVER=ON", "-DBUILD_SHARED_LIBS=OFF"]
    subprocess.run(configure, check=True, capture_output=True)
    jobs = str(os.cpu_count() or 2)
    subprocess.run(["cmake", "--build", str(CACHE / "build"), "--target", "llama-server", "-j", jobs], check=True)
    return binary
