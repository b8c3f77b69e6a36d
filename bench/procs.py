"""Starting the processes a benchmark compares, and reading their memory.

Every server runs as its own process on a free loopback port, with its output in a log file under
``bench/results/tmp/``; ``Service.stop`` ends exactly the process it started (and that process's
children, e.g. LiteLLM's workers) by process group.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from gatewright.cli.serve import read_first_start_keys

ROOT = Path(__file__).resolve().parent.parent
TMP = ROOT / "bench" / "results" / "tmp"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    api_key: str | None = None
    info: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def pids(self) -> list[int]:
        return [self.process.pid, *descendants(self.process.pid)]

    def rss_mb(self) -> float:
        return sum(rss_kb(pid) for pid in self.pids()) / 1024

    def cpu_seconds(self) -> float:
        return sum(cpu_ticks(pid) for pid in self.pids()) / CLOCK_TICKS

    def wait_idle(self, below: float = 0.05, timeout: float = 30.0) -> float:
        """Wait until the process tree uses less than ``below`` of a core (a server still working off
        a backlog after its load stopped would steal CPU from the next run); returns seconds waited."""
        started = time.monotonic()
        last = self.cpu_seconds()
        while time.monotonic() - started < timeout:
            time.sleep(0.25)
            now = self.cpu_seconds()
            if now - last < below * 0.25:
                break
            last = now
        return time.monotonic() - started

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)  # its own group: workers go too
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime + stime


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def wait_http(url: str, process: subprocess.Popen[bytes], timeout: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2.0).status_code < 500:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f}s:\n{log_path.read_text()[-3000:]}")


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    port: int,
    health: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 180.0,
    cwd: Path = ROOT,
) -> Service:
    TMP.mkdir(parents=True, exist_ok=True)
    log_path = TMP / f"{name}-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,  # own process group, so stop() can end workers too
        )
    service = Service(name, process, port, log_path)
    try:
        wait_http(f"{service.url}{health}", process, timeout, log_path)
    except BaseException:
        service.stop()
        raise
    return service


def start_mock(tokens: int) -> Service:
    port = free_port()
    argv = [sys.executable, "-m", "bench.mock_upstream", "--port", str(port), "--tokens", str(tokens)]
    return spawn("mock", argv, port=port, health="/health")


def start_mock_with_catalog(tokens: int, label: str) -> tuple[Service, Path]:
    """The mock, and a catalog serving it (``mock_catalog``) named after the benchmark."""
    mock = start_mock(tokens)
    try:
        return mock, mock_catalog(mock.url, TMP / f"catalog-{label}-{mock.port}.toml")
    except BaseException:
        mock.stop()
        raise


def mock_catalog(mock_url: str, path: Path) -> Path:
    """A catalog with one model served by the mock through gatewright's ``openai`` backend."""
    path.write_text(
        f"""default_model = "mock"

[[models]]
id = "mock"
context_window = 32768
max_output = 4096
backend = "openai"
base_url = "{mock_url}/v1"
upstream_model = "mock-upstream"
prices = {{ input = 0.02, output = 0.06 }}
"""
    )
    return path


def local_catalog(model_path: Path, threads: int, n_ctx: int, path: Path, parallel: int | None = None) -> Path:
    """The packaged embedded model's settings, pinned to a GGUF file, a thread count and (when
    given) the number of sequences decoded together."""
    batching = f", parallel = {parallel}" if parallel is not None else ""
    path.write_text(
        f"""default_model = "local"

[[models]]
id = "local"
context_window = {n_ctx}
max_output = 4096
backend = "llamacpp"
path = "{model_path}"
capabilities = {{ tools = true, json_schema = true, logprobs = true }}
options = {{ n_ctx = {n_ctx}, n_threads = {threads}{batching} }}
"""
    )
    return path


# Limits high enough never to trigger, credits enough for any run: the platform's work is measured,
# not its refusals.
PLATFORM_ENV = {
    "GATEWRIGHT_DEFAULT_REQUESTS_PER_MINUTE": "1000000000",
    "GATEWRIGHT_DEFAULT_TOKENS_PER_MINUTE": "1000000000000",
    "GATEWRIGHT_STARTING_CREDITS": "1000000000000000",
}


def start_gatewright(
    name: str, catalog: Path, *, platform: bool, log_level: str = "info", workers: int = 1, checkout: Path = ROOT
) -> Service:
    """``gatewright serve`` from ``checkout`` (another checkout of the repository measures its code
    with the same interpreter and libraries: ``python -m`` imports the package from the working
    directory first)."""
    port = free_port()
    data_dir = TMP / f"{name}-{port}-data"
    env = {
        "GATEWRIGHT_CATALOG": str(catalog),
        "GATEWRIGHT_DATA_DIR": str(data_dir),
        "GATEWRIGHT_PORT": str(port),
        "GATEWRIGHT_LOG_LEVEL": log_level,
        **(PLATFORM_ENV if platform else {}),
    }
    argv = [sys.executable, "-m", "gatewright", "serve", "--workers", str(workers), *([] if platform else ["--bare"])]
    env["PYTHONPATH"] = str(checkout)
    service = spawn(name, argv, port=port, health="/health", env=env, timeout=300, cwd=checkout)
    if platform:
        try:
            service.api_key = first_start_api_key(service, data_dir)
        except RuntimeError:
            service.stop()
            raise
    return service


def first_start_api_key(service: Service, data_dir: Path) -> str:
    """The API key a platform gateway made on its first start: from the keys file it writes when
    stdout is not a terminal, or printed in its log (a checkout from before the keys file)."""
    api_key, _ = read_first_start_keys(data_dir)
    if api_key is None:
        found = re.search(r"API key \(calls models\):\s+(\S+)", service.log())
        api_key = found.group(1) if found else None
    if api_key is None:
        raise RuntimeError(f"{service.name}: no API key written on first start:\n{service.log()[-2000:]}")
    return api_key


def start_litellm(venv: Path, mock_url: str, workers: int) -> Service:
    port = free_port()
    config = TMP / f"litellm-{port}.yaml"
    # The same single model as gatewright's catalog, pointing at the same mock.
    config.write_text(
        "model_list:\n"
        "  - model_name: mock\n"
        "    litellm_params:\n"
        "      model: openai/mock-upstream\n"
        f"      api_base: {mock_url}/v1\n"
        "      api_key: unused\n"
    )
    key = "sk-bench-" + os.urandom(16).hex()  # LiteLLM refuses weak master keys
    env = {
        "LITELLM_MASTER_KEY": key,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no internet: do not fetch the price map
        "LITELLM_LOG": "ERROR",
    }
    argv = [str(venv / "bin" / "litellm"), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--num_workers", str(workers)]
    if workers > 1:
        # Workers still importing on a busy 2-core machine fail uvicorn's default health check.
        argv += ["--timeout_worker_healthcheck", "300"]
    service = spawn("litellm", argv, port=port, health="/health/liveliness", env=env, timeout=420)
    service.api_key = key
    service.info["workers"] = str(workers)
    return service


def start_llamacpp_server(venv: Path, model_path: Path, threads: int, n_ctx: int) -> Service:
    port = free_port()
    argv = [
        str(venv / "bin" / "python"),
        *("-m", "llama_cpp.server", "--model", str(model_path), "--host", "127.0.0.1", "--port", str(port)),
        *("--n_threads", str(threads), "--n_threads_batch", str(threads), "--n_ctx", str(n_ctx)),
        *("--n_batch", "512", "--interrupt_requests", "false", "--model_alias", "local"),
    ]
    return spawn("llama_cpp.server", argv, port=port, health="/v1/models", timeout=300)


def start_llama_server(binary: Path, model_path: Path, threads: int, n_ctx: int, parallel: int) -> Service:
    """llama.cpp's C++ server with ``parallel`` slots of ``n_ctx`` tokens each (continuous batching)."""
    port = free_port()
    argv = [str(binary), "-m", str(model_path), "--host", "127.0.0.1", "--port", str(port), "--jinja"]
    argv += ["-t", str(threads), "-tb", str(threads), "-c", str(n_ctx * parallel), "-np", str(parallel)]
    argv += ["-a", "local", "--no-webui"]
    return spawn("llama-server", argv, port=port, health="/health", timeout=300)


@contextlib.contextmanager
def running(*starters: Service) -> Iterator[tuple[Service, ...]]:
    try:
        yield starters
    finally:
        for service in reversed(starters):
            service.stop()
