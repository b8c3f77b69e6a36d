"""Real PostgreSQL and Redis servers for tests, on free loopback ports, from Debian packages.

Each launcher finds the server binary, installs the Debian package when it is missing and this
process may (root with apt-get), starts a private instance in a temporary directory and stops it at
the end. ``ServiceUnavailable`` says why a server cannot run here; fixtures turn it into a skip with
that message, or into a failure when ``CI=true`` (CI must test every store, never skip one).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.procs import free_port


class ServiceUnavailable(RuntimeError):
    """The service cannot be installed or started on this machine."""


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def _apt_install(package: str) -> None:
    """Install a Debian package if this process is allowed to; raise ServiceUnavailable if not."""
    if shutil.which("apt-get") is None:
        raise ServiceUnavailable(f"{package} is not installed and there is no apt-get to install it")
    if os.geteuid() != 0:
        raise ServiceUnavailable(f"{package} is not installed; install it with: sudo apt-get install {package}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
    ):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0 and command[1] == "install":
            raise ServiceUnavailable(f"apt-get install {package} failed:\n{done.stderr[-2000:]}")


def _wait_port(port: int, process: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceUnavailable(f"server exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise ServiceUnavailable(f"server did not listen on {port} within {timeout}s:\n{log.read_text(errors='replace')}")


def _stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- PostgreSQL --------------------------------------------------------------------------------


def postgres_bin() -> Path:
    def newest() -> Path | None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
        return Path(found[-1]).parent if found else None

    bindir = newest()
    if bindir is None:
        _apt_install("postgresql")
        bindir = newest()
    if bindir is None:
        raise ServiceUnavailable("postgresql is installed but /usr/lib/postgresql/*/bin/initdb is missing")
    return bindir


@dataclass
class Postgres:
    port: int
    bindir: Path
    datadir: Path

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh, empty database; returns its SQLAlchemy URL."""
        name = "t_" + uuid.uuid4().hex[:12]
        self.psql(f"CREATE DATABASE {name}")
        return self.url(name)

    def psql(self, sql: str, database: str = "postgres") -> str:
        done = subprocess.run(
            [
                str(self.bindir / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr}")
        return done.stdout


def _as_postgres_user() -> dict[str, Any]:
    # The server refuses to run as root: run it as the package's `postgres` system user (set in
    # the child itself rather than through runuser, so stop signals reach the server directly).
    if os.geteuid() != 0:
        return {}
    return {"user": "postgres", "group": "postgres", "extra_groups": [], "cwd": "/"}


@contextmanager
def running_postgres() -> Iterator[Postgres]:
    bindir = postgres_bin()
    root = Path(tempfile.mkdtemp(prefix="gatewright-pg-"))
    datadir, log = root / "data", root / "server.log"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    as_user = _as_postgres_user()
    init = subprocess.run(
        [
            str(bindir / "initdb"),
            "-D",
            str(datadir),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        **as_user,
    )
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise ServiceUnavailable(f"initdb failed:\n{init.stdout}\n{init.stderr}")
    port = free_port()
    settings = {
        "listen_addresses": "127.0.0.1",
        "port": str(port),
        "unix_socket_directories": str(root),
        "max_connections": "300",
        # A throwaway test server: durability across power loss buys nothing here.
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
    }
    options = [arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(bindir / "postgres"), "-D", str(datadir), *options], stdout=out, stderr=subprocess.STDOUT, **as_user
        )
    try:
        _wait_port(port, process, 60, log)
        server = Postgres(port, bindir, datadir)
        _wait_ready(server, process, log)
        yield server
    finally:
        _stop(process, signal.SIGINT)  # "fast" shutdown: roll back and disconnect clients
        shutil.rmtree(root, ignore_errors=True)


def _wait_ready(server: Postgres, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            server.psql("SELECT 1")
            return
        except RuntimeError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise ServiceUnavailable(f"postgres did not accept connections:\n{log.read_text()}") from None
            time.sleep(0.1)


# -- Redis -------------------------------------------------------------------------------------


def redis_bin() -> Path:
    found = shutil.which("redis-server")
    if found is None:
        _apt_install("redis-server")
        found = shutil.which("redis-server")
    if found is None:
        raise ServiceUnavailable("redis-server is not on PATH after installing the Debian package")
    return Path(found)


@dataclass
class Redis:
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@contextmanager
def running_redis() -> Iterator[Redis]:
    binary = redis_bin()
    root = Path(tempfile.mkdtemp(prefix="gatewright-redis-"))
    log = root / "server.log"
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(binary),
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(root),
                "--daemonize",
                "no",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_port(port, process, 30, log)
        yield Redis(port)
    finally:
        _stop(process)
        shutil.rmtree(root, ignore_errors=True)
