"""Embeddings under test: the shared zero-config gateway (default catalog), and one gateway of
embedding models only, whose catalog opens what the default one keeps closed (shorter vectors,
small limits, a price that runs a small account dry)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest

from tests.support.procs import Gateway, running_gateway
from tests.upstream.conftest import Store, catalog_toml

EMBEDDING_MODEL = "all-minilm-l6-v2"
REFERENCE = Path(__file__).resolve().parent.parent / "fixtures" / "embeddings" / "reference.json"
# USD per million input tokens; 1 USD = 2,000,000 credits.
CHEAP = 3.0  # 6 credits a token
PRICEY = 500.0  # 1,000 credits a token: STARTING_CREDITS pays for a few dozen tokens
STARTING_CREDITS = 30_000


def reference() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(REFERENCE.read_text(encoding="utf-8"))
    return data


def unit(rows: Any) -> np.ndarray:  # type: ignore[type-arg]
    array = np.asarray(rows, dtype=np.float64)
    return array / np.linalg.norm(array, axis=-1, keepdims=True)


def local(model_id: str, price: float, **embedding: Any) -> dict[str, Any]:
    return {
        "id": model_id,
        "type": "embedding",
        "context_window": 256,
        "backend": "embedder",
        "path": "package:all-minilm-l6-v2",
        "prices": {"input": price},
        "embedding": {"dimensions": 384, **embedding},
        "options": {"workers": 1},
    }


@pytest.fixture(scope="session")
def embed_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    data_dir = tmp_path_factory.mktemp("embed-gateway")
    catalog = data_dir / "catalog.toml"
    models = [
        local("minilm-cheap", CHEAP, min_dimensions=32, max_inputs=8, max_total_tokens=200),
        local("minilm-pricey", PRICEY),
    ]
    catalog.write_text(catalog_toml(models))
    env = {"GATEWRIGHT_STARTING_CREDITS": str(STARTING_CREDITS)}
    with running_gateway(data_dir, catalog=catalog, env=env) as gw:
        assert gw.api_key, gw.log()
        yield gw


@pytest.fixture(scope="session")
def embed_client(embed_gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{embed_gateway.url}/v1", api_key=embed_gateway.api_key, max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def embed_store(embed_gateway: Gateway) -> Store:
    return Store(embed_gateway.data_dir / "gatewright.db")
