"""Fixtures for the embedded engine's constrained decoding: the real model's tokenizer for grammar
tests without generation (fast), and small helpers shared by the real-model tests."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from llama_cpp import Llama
from llguidance.llamacpp import lltokenizer_from_vocab

from gatewright.backends.llamacpp.constrain import Guide
from gatewright.backends.weights import resolve_model_path
from gatewright.settings import Settings
from tests.support.procs import Gateway


@pytest.fixture(scope="session")
def engine_client(gateway: Gateway) -> openai.OpenAI:
    """The shared real-model gateway, with room for a slow first constrained request (the grammar
    tokenizer is built then) on a busy 2-core machine."""
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.api_key, max_retries=0, timeout=600)


@pytest.fixture(scope="session")
def vocab_model() -> Iterator[Llama]:
    """The embedded model's vocabulary only (no weights in memory)."""
    path = resolve_model_path("package:qwen2.5-coder-0.5b-instruct", Settings().model_cache)
    llm = Llama(model_path=str(path), vocab_only=True, verbose=False)
    yield llm
    llm.close()


@pytest.fixture(scope="session")
def guide(vocab_model: Llama) -> Guide:
    guide = Guide(lambda: lltokenizer_from_vocab(vocab_model._model.vocab))
    with warnings.catch_warnings():
        # llguidance reads token attributes through a llama_cpp alias deprecated in 0.3.36.
        warnings.simplefilter("ignore", DeprecationWarning)
        assert guide.tokenizer.vocab_size == vocab_model.n_vocab()
    return guide


def function_tool(name: str, parameters: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": parameters}}


WEATHER_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 24},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
ADD_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {"a": {"type": "integer", "minimum": -1000, "maximum": 1000}, "b": {"type": "integer"}},
    "required": ["a", "b"],
    "additionalProperties": False,
}
WEATHER = function_tool("get_weather", WEATHER_PARAMETERS, "Current weather in a city.")
ADD = function_tool("add", ADD_PARAMETERS, "Add two integers.")
