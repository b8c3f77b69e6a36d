"""Real processes for tests: a gateway on a free loopback port, and helpers to wait for them."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anthropic
import httpx
import openai

from gatewright.cli.serve import read_first_start_keys, read_operator_key
from gatewright.store.journal import SUFFIX, read_lines


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 60.0, process: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def wait_log(gateway: Gateway, text: str, count: int, within: float = 120.0) -> None:
    """Wait until the gateway's log holds ``text`` ``count`` times (e.g. each of ``--workers N``
    reporting its startup complete: the gateway answers as soon as one worker has)."""
    deadline = time.monotonic() + within
    while gateway.log().count(text) < count:
        assert time.monotonic() < deadline, f"{text!r} not {count} times in {within} s:\n{gateway.log()}"
        time.sleep(0.1)


@dataclass
class Gateway:
    """A running `gatewright serve` process and what it printed on first start."""

    process: subprocess.Popen[str]
    port: int
    data_dir: Path
    log_path: Path
    api_key: str | None = None
    management_key: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    operator_key: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @functools.cached_property
    def http(self) -> httpx.Client:
        """A client for raw HTTP on this gateway (paths relative to it), as ``AppGateway.http``."""
        return httpx.Client(base_url=self.url, timeout=600)

    def openai(self, key: str | None = None) -> openai.OpenAI:
        """The official SDK on this gateway (no retries: a test sees the first answer)."""
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key or self.api_key, max_retries=0, timeout=600)

    def anthropic(self, key: str | None = None) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.url, api_key=key or self.api_key, max_retries=0, timeout=600)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if "http" in self.__dict__:
            self.http.close()
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def journaled(data_dir: Path) -> bool:
    """Whether a gateway's settlement journal holds charges not yet committed to its store
    (committed lines are emptied out: store.journal)."""
    for path in (data_dir / "journal").glob(f"*{SUFFIX}"):
        with contextlib.suppress(FileNotFoundError):  # a full one deleted once committed
            if path.stat().st_size:
                return True
    return False


def journal_request_ids(data_dir: Path) -> list[str]:
    """The request ids of the charges in a data directory's settlement journals, as the next start
    reads them."""
    return [
        charge.hold.request_id
        for path in sorted((data_dir / "journal").glob(f"*{SUFFIX}"))
        for charge in read_lines(path.read_bytes(), path)
    ]


class PortTaken(RuntimeError):
    """The gateway could not bind its port: another process had it."""


def start_gateway(
    data_dir: Path,
    *,
    catalog: Path | None = None,
    env: Mapping[str, str] | None = None,
    args: list[str] | None = None,
    port: int | None = None,
    timeout: float = 120.0,
) -> Gateway:
    if port is None:
        # free_port() releases the port it found and the gateway binds it seconds later (after its
        # imports): another process binding a port meanwhile can take it. Then start on another one.
        for _ in range(2):
            try:
                return start_gateway(data_dir, catalog=catalog, env=env, args=args, port=free_port(), timeout=timeout)
            except PortTaken:
                pass
        port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / f"gateway-{port}.log"
    full_env = {
        **os.environ,
        "GATEWRIGHT_DATA_DIR": str(data_dir),
        "GATEWRIGHT_PORT": str(port),
        "GATEWRIGHT_LOG_LEVEL": "info",
        **(env or {}),
    }
    if catalog is not None:
        full_env["GATEWRIGHT_CATALOG"] = str(catalog)
    log_file = log_path.open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "gatewright", "serve", *(args or [])],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=full_env,
        text=True,
    )
    gateway = Gateway(process, port, data_dir, log_path, env=dict(env or {}))
    try:
        wait_http(f"{gateway.url}/health", timeout, process)
    except Exception:
        gateway.stop()
        if "address already in use" in gateway.log().lower():
            raise PortTaken(f"port {port} was taken before the gateway bound it:\n{gateway.log()}") from None
        raise RuntimeError(f"gateway did not start:\n{gateway.log()}") from None
    # Standard output is a file here, not a terminal: the first start writes its keys to a file.
    gateway.api_key, gateway.management_key = read_first_start_keys(data_dir)
    gateway.operator_key = read_operator_key(data_dir)
    return gateway


@contextmanager
def running_gateway(data_dir: Path, **kwargs: object) -> Iterator[Gateway]:
    gateway = start_gateway(data_dir, **kwargs)  # type: ignore[arg-type]
    try:
        yield gateway
    finally:
        gateway.stop()
