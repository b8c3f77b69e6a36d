"""Codex CLI for the tests: the pinned ``@openai/codex`` npm package, installed from the npm registry
into a cache directory on first use (the package ships the native binary for this platform).

Where it cannot be had or cannot run (no npm, no registry, a platform without a binary) the test is
skipped with the reason, except in CI (``CI`` set), where that is a failure: CI must run it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.services import in_ci

CODEX_VERSION = "0.169.0"
CACHE = Path(os.environ.get("GATEWRIGHT_TEST_CACHE", Path.home() / ".cache" / "gatewright")) / "codex" / CODEX_VERSION


def _unavailable(reason: str) -> None:
    message = f"Codex CLI {CODEX_VERSION} cannot run here: {reason}"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def codex_binary() -> Path:
    launcher = CACHE / "node_modules" / ".bin" / "codex"
    if not launcher.exists():
        npm = shutil.which("npm")
        if npm is None:
            _unavailable("npm is not installed (.ci/run installs Node.js and npm from Debian)")
        CACHE.mkdir(parents=True, exist_ok=True)
        command = [
            str(npm),
            "install",
            "--no-audit",
            "--no-fund",
            "--prefix",
            str(CACHE),
            f"@openai/codex@{CODEX_VERSION}",
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if done.returncode != 0 or not launcher.exists():
            _unavailable(f"npm install failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    # The launcher is a node script that picks the platform's native binary; run that directly.
    natives = sorted(CACHE.glob("node_modules/@openai/codex-*/vendor/*/bin/codex"))
    if not natives:
        _unavailable("the package has no native binary for this platform")
    binary = natives[0]
    try:
        version = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60)
    except OSError as error:
        _unavailable(str(error))
    if version.returncode != 0 or CODEX_VERSION not in version.stdout:
        _unavailable(f"`codex --version` answered {version.returncode}: {version.stdout}{version.stderr}")
    return binary
