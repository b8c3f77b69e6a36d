"""What the benchmark ran on: CPU, cores, instruction-set flags, memory, kernel, load, versions."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

from bench.procs import ROOT

FLAGS_OF_INTEREST = ("avx", "avx2", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "fma", "f16c", "sha_ni")


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    return info


def _meminfo_gib() -> float:
    match = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
    return round(int(match.group(1)) / 1024**2, 1) if match else 0.0


def _version(package: str, python: Path | None = None) -> str | None:
    if python is None:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return None
    if not python.exists():
        return None
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    return done.stdout.strip() or None


def _command(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr) else None


def _wrk_version() -> str | None:
    line = _command(["wrk", "--version"])  # "wrk debian/4.1.0-3+b2 [epoll] Copyright ..."
    match = re.match(r"wrk (\S+)", line or "")
    return match.group(1) if match else line


def describe(litellm_venv: Path, server_venv: Path) -> dict[str, Any]:
    cpu = _cpuinfo()
    flags = set(cpu.get("flags", "").split())
    return {
        "cpu": cpu.get("model name", platform.processor()),
        "cores": os.cpu_count(),
        "flags": {flag: flag in flags for flag in FLAGS_OF_INTEREST},
        "memory_gib": _meminfo_gib(),
        "kernel": platform.release(),
        "hypervisor": "hypervisor" in flags,
        "load_average_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "versions": {
            "gatewright": _command(["git", "-C", str(ROOT), "describe", "--always", "--dirty"]),
            "llama-cpp-python": _version("llama_cpp_python"),
            "llama-cpp-python (server venv)": _version("llama_cpp_python", server_venv / "bin" / "python"),
            "litellm": _version("litellm", litellm_venv / "bin" / "python"),
            "uvicorn": _version("uvicorn"),
            "starlette": _version("starlette"),
            "httpx": _version("httpx"),
            "wrk": _wrk_version(),
        },
    }
