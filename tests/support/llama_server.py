"""A real OpenAI-compatible upstream for the whole session: ``llama_cpp.server`` serving the local
GGUF, and a gateway process in front of it. A pytest plugin (``tests/conftest.py``), so the
upstream tests and the conformance matrix share one server instead of loading the model twice."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from gatewright.backends.weights import resolve_model_path
from gatewright.settings import Settings
from tests.support.catalogs import catalog_toml
from tests.support.procs import Gateway, free_port, running_gateway, wait_http

EMBEDDED_WEIGHTS = "package:qwen2.5-coder-0.5b-instruct"


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    gguf = resolve_model_path(EMBEDDED_WEIGHTS, Settings().model_cache)
    port = free_port()
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    # One thread: it shares two cores with the gateway, the tests and other engineers' runs.
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--n_ctx", "2048", "--n_threads", "1", "--interrupt_requests", "false"]
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/v1/models", 180, process)
    except Exception:
        process.kill()
        raise RuntimeError(f"llama_cpp.server did not start:\n{log_path.read_text()}") from None
    try:
        yield url
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


LLAMA_PRICES = {"input": 2.0, "cached_input": 1.0, "output": 6.0}


@pytest.fixture(scope="session")
def llama_gateway(tmp_path_factory: pytest.TempPathFactory, llama_server: str) -> Iterator[Gateway]:
    def served(model_id: str, **extra: Any) -> dict[str, Any]:
        fields = {
            "context_window": 2048,
            "max_output": 256,
            "prices": LLAMA_PRICES,
            "capabilities": {"tools": True},
            "backend": "openai",
            "base_url": f"{llama_server}/v1",
            "upstream_model": "qwen2.5-coder-0.5b-instruct",
            **extra,
        }
        return {"id": model_id, **fields}

    models = [
        served("served-qwen", aliases=["served"]),
        # Claims a larger window than the server has: the upstream itself refuses long prompts.
        served("served-qwen-wide", context_window=32768, max_retries=0),
        # json_schema is claimed, but llama_cpp.server answers it with a 500: the upstream's own error.
        served("served-qwen-schema", capabilities={"json_schema": True}, max_retries=0),
    ]
    data_dir = tmp_path_factory.mktemp("llama-gateway")
    catalog = data_dir / "catalog.toml"
    catalog.write_text(catalog_toml(models))
    with running_gateway(data_dir, catalog=catalog) as gw:
        assert gw.api_key, gw.log()
        yield gw
