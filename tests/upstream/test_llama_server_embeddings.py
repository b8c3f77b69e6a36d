"""Embeddings from a real OpenAI-compatible upstream: ``llama_cpp.server`` started with embeddings
on, serving all-MiniLM-L6-v2 as a GGUF (the embedded model's own weights, sha256-checked and
converted without PyTorch), behind a gateway whose catalog entry has ``backend = "openai"``."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openai
import pytest

from gatewright.backends.weights import resolve_embedding_model
from gatewright.settings import Settings
from tests.embeddings.conftest import reference, unit
from tests.support.procs import Gateway, free_port, running_gateway, wait_http
from tests.upstream.conftest import Store, catalog_toml

REF = reference()
PRICE = 4.0  # USD per million input tokens: 8 credits a token


@pytest.fixture(scope="module")
def embedding_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    gguf = resolve_embedding_model("package:all-minilm-l6-v2", Settings().model_cache).gguf
    port = free_port()
    log_path = tmp_path_factory.mktemp("llama-embed-server") / "server.log"
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--embedding", "true"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "512", "--n_threads", "1"]
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


@pytest.fixture(scope="module")
def served_gateway(tmp_path_factory: pytest.TempPathFactory, embedding_server: str) -> Iterator[Gateway]:
    def served(model_id: str, **embedding: int) -> dict[str, object]:
        return {
            "id": model_id,
            "type": "embedding",
            "context_window": 512,
            "prices": {"input": PRICE},
            "embedding": {"dimensions": 384, **embedding},
            "backend": "openai",
            "base_url": f"{embedding_server}/v1",
            "upstream_model": "all-minilm-l6-v2",
            "max_retries": 0,
        }

    data_dir = tmp_path_factory.mktemp("llama-embed-gateway")
    catalog: Path = data_dir / "catalog.toml"
    catalog.write_text(catalog_toml([served("served-minilm"), served("served-minilm-short", min_dimensions=64)]))
    with running_gateway(data_dir, catalog=catalog) as gw:
        assert gw.api_key, gw.log()
        yield gw


@pytest.fixture(scope="module")
def served(served_gateway: Gateway) -> openai.OpenAI:
    url, key = f"{served_gateway.url}/v1", served_gateway.api_key
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=120)


def test_upstream_vectors_match_the_reference_in_input_order(served: openai.OpenAI) -> None:
    sentences = REF["sentences"][:8]
    response = served.embeddings.create(model="served-minilm", input=sentences, encoding_format="float")
    vectors = np.array([d.embedding for d in response.data], dtype=np.float32)
    assert [d.index for d in response.data] == list(range(8)) and vectors.shape == (8, 384)
    # llama_cpp.server returns mean-pooled vectors unnormalised: the directions are the reference's.
    assert (unit(vectors) * unit(REF["vectors"][:8])).sum(axis=1).min() > 0.999
    assert response.usage.prompt_tokens == sum(REF["tokens"][:8])  # the upstream's own count


def test_base64_and_billing_to_the_credit(served: openai.OpenAI, served_gateway: Gateway) -> None:
    store = Store(served_gateway.data_dir / "gatewright.db")
    before = store.balance()
    raw = served.embeddings.with_raw_response.create(model="served-minilm", input=REF["sentences"][:3])
    response = raw.parse()  # the SDK asked for base64 and decoded it
    floats = served.embeddings.create(model="served-minilm", input=REF["sentences"][:3], encoding_format="float")
    decoded = np.array([d.embedding for d in response.data], np.float32)
    assert np.array_equal(decoded, np.array([d.embedding for d in floats.data], np.float32))
    tokens = response.usage.prompt_tokens
    charged = (response.model_extra or {})["meta"]["usage"]["credits_used"]
    assert tokens == sum(REF["tokens"][:3]) and charged == math.ceil(tokens * PRICE * 2)
    assert raw.headers["x-gatewright-deployment"] == "served-minilm"
    assert store.charges(raw.headers["x-request-id"]) == [-charged]
    assert before - store.balance() == charged + (floats.model_extra or {})["meta"]["usage"]["credits_used"]


def test_dimensions_the_upstream_ignores_are_cut_by_the_gateway(served: openai.OpenAI) -> None:
    full = served.embeddings.create(model="served-minilm-short", input="Hello world", encoding_format="float")
    short = served.embeddings.create(
        model="served-minilm-short", input="Hello world", dimensions=64, encoding_format="float"
    )
    vector = np.array(short.data[0].embedding)
    assert vector.shape == (64,) and abs(np.linalg.norm(vector) - 1) < 1e-5
    assert np.allclose(vector, unit(np.array(full.data[0].embedding[:64])), atol=1e-6)
    with pytest.raises(openai.BadRequestError) as caught:
        served.embeddings.create(model="served-minilm", input="x", dimensions=64)
    assert caught.value.body["param"] == "dimensions"  # type: ignore[index]


def test_an_upstream_failure_reaches_the_caller_unbilled(served: openai.OpenAI, served_gateway: Gateway) -> None:
    store = Store(served_gateway.data_dir / "gatewright.db")
    before = store.balance()
    # llama_cpp.server takes text only, and answers token arrays with a 500 (its validation error):
    # an upstream failure, 502, with the upstream's message.
    with pytest.raises(openai.APIStatusError) as caught:
        served.embeddings.create(model="served-minilm", input=[[101, 7592, 102]])
    assert caught.value.status_code == 502
    assert "upstream served-minilm answered 500" in caught.value.body["message"]  # type: ignore[index]
    assert store.balance() == before and store.reserved() == 0
