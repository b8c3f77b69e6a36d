"""Reading an OpenAI-compatible upstream's embeddings answer (translation only; the real upstream
is tests/upstream/test_llama_server_embeddings.py)."""

from __future__ import annotations

import base64

import numpy as np
import orjson
import pytest

from gatewright.backends.openai_compat import OpenAICompatBackend
from gatewright.backends.openai_embeddings import estimate, read_answer, wire_request
from gatewright.core.catalog import ModelEntry
from gatewright.core.errors import UpstreamError
from gatewright.core.types import EmbeddingRequest

ENTRY = ModelEntry.model_validate(
    {
        "id": "up",
        "type": "embedding",
        "context_window": 512,
        "embedding": {"dimensions": 3},
        "backend": "openai",
        "base_url": "http://127.0.0.1:9/v1",
        "upstream_model": "their-name",
    }
)
UPSTREAM = OpenAICompatBackend(ENTRY.deployments[0], ENTRY)
REQUEST = EmbeddingRequest(model="up", inputs=("one two three four", "five"), dimensions=2, user="u1")


def test_the_wire_request_names_the_upstream_model_and_asks_for_floats() -> None:
    body = wire_request(REQUEST, "their-name")
    assert body == {
        "model": "their-name",
        "input": ["one two three four", "five"],
        "encoding_format": "float",
        "dimensions": 2,
        "user": "u1",
    }
    ids = EmbeddingRequest(model="up", inputs=((1, 2, 3), (4,)), truncate=100)
    assert wire_request(ids, "m")["input"] == [[1, 2, 3], [4]]
    assert wire_request(ids, "m")["truncate_prompt_tokens"] == 100
    assert estimate(ids) == ([3, 1], True)  # token arrays count exactly
    assert estimate(REQUEST)[1] is False


def test_vectors_come_back_in_input_order_whatever_the_answer_order() -> None:
    answer = {
        "data": [
            {"index": 1, "embedding": [0.0, 1.0, 0.0]},
            {"index": 0, "embedding": base64.b64encode(np.array([1, 0, 0], "<f4").tobytes()).decode()},
        ],
        "usage": {"prompt_tokens": 7, "total_tokens": 7},
    }
    result = read_answer(UPSTREAM, orjson.dumps(answer), REQUEST)
    assert result.vectors.tolist() == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    assert result.usage.input_tokens == 7 and not result.usage.estimated


def test_no_usage_is_estimated_and_marked() -> None:
    answer = {"data": [{"index": 0, "embedding": [1, 0, 0]}, {"index": 1, "embedding": [0, 1, 0]}]}
    result = read_answer(UPSTREAM, orjson.dumps(answer), REQUEST)
    assert result.usage.estimated and result.usage.input_tokens == sum(estimate(REQUEST)[0])


@pytest.mark.parametrize(
    "answer",
    [
        b"not json",
        b'{"object": "list"}',
        orjson.dumps({"data": [{"index": 0, "embedding": [1, 0, 0]}]}),  # one vector for two inputs
        orjson.dumps({"data": [{"index": 0, "embedding": [1, 0]}, {"index": 1, "embedding": [1, 0, 0]}]}),
    ],
)
def test_answers_that_cannot_be_read_are_upstream_errors(answer: bytes) -> None:
    with pytest.raises(UpstreamError):
        read_answer(UPSTREAM, answer, REQUEST)
