"""What agent frameworks send mid tool loop (tests/support/framework.py), on the embedded engine
(the real model, through the official SDK): every field accepted, the named tool forced, one call,
the usage chunk."""

from __future__ import annotations

import json

import openai

from tests.conftest import MODEL
from tests.support.framework import agent_turn, forced_call_from_stream


def test_agent_framework_turn_on_the_embedded_engine(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(**agent_turn(MODEL, stream=True)))
    call = forced_call_from_stream(chunks)
    arguments = json.loads(call["arguments"])  # constrained decoding: always the tool's schema
    assert isinstance(arguments, dict) and isinstance(arguments["city"], str)
