"""The Responses API on the real embedded model, through the official `openai` SDK unchanged:
``responses.create`` and ``responses.stream``, a two-turn tool loop continued by
``previous_response_id`` (the stored prefix is read from the engine's prompt cache), strict
function arguments and structured output guaranteed by constrained decoding. Few, short requests:
the session's real-model gateway serves every engineer's tests."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import openai
import pydantic
from openai.types.responses import ResponseFunctionToolCall

from tests.conftest import MODEL
from tests.responses.wire import check, check_stream, post
from tests.support.procs import Gateway

WEATHER: dict[str, Any] = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 24},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
    "strict": True,
}


def test_create_and_stream_through_the_sdk(client: openai.OpenAI) -> None:
    response = client.responses.create(model="local", input="Say hello.", max_output_tokens=16, temperature=0)
    assert response.object == "response" and response.model == MODEL
    assert response.status in ("completed", "incomplete") and response.output_text
    assert response.usage is not None and 0 < response.usage.output_tokens <= 16
    assert response.model_extra is not None and response.model_extra["meta"]["usage"]["credits_used"] > 0

    deltas: list[str] = []
    with client.responses.stream(
        model=MODEL, input="Name a colour.", instructions="Answer in one word.", max_output_tokens=16, temperature=0
    ) as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert deltas and "".join(deltas) == final.output_text
    assert final.status in ("completed", "incomplete") and final.instructions == "Answer in one word."


def test_raw_stream_of_the_engine_matches_the_spec(gateway: Gateway) -> None:
    body = {"model": MODEL, "input": "Hi", "max_output_tokens": 16, "stream": True, "store": False}
    events = check_stream(post(gateway, body).content)
    assert events[0]["type"] == "response.created" and events[-1]["type"] in (
        "response.completed",
        "response.incomplete",
    )
    assert events[-1]["response"]["store"] is False


def test_two_turn_tool_loop_continued_from_the_stored_response(client: openai.OpenAI) -> None:
    first = client.responses.create(
        model=MODEL,
        input="What is the weather in Paris, in celsius?",
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="required",
        max_output_tokens=60,
        temperature=0,
    )
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert isinstance(call, ResponseFunctionToolCall) and call.name == "get_weather"
    # strict: the arguments are guaranteed by constrained decoding to validate.
    jsonschema.validate(json.loads(call.arguments), WEATHER["parameters"])
    check("Response", first.model_dump(mode="json", exclude_none=False, exclude_unset=True))

    second = client.responses.create(
        model=MODEL,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": '{"temperature_c": 21}'}],
        tools=[WEATHER],  # type: ignore[list-item]
        max_output_tokens=24,
        temperature=0,
    )
    assert second.output and second.previous_response_id == first.id
    assert second.usage is not None and first.usage is not None
    # The stored conversation is the prefix: the engine reads the first turn's prompt from its cache.
    assert second.usage.input_tokens > first.usage.input_tokens
    assert second.usage.input_tokens_details.cached_tokens >= first.usage.input_tokens // 2
    items = client.responses.input_items.list(second.id, order="asc")
    assert [item.type for item in items.data] == ["message", "function_call", "function_call_output"]


class City(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    name: str = pydantic.Field(max_length=24)
    country: str = pydantic.Field(max_length=24)


def test_structured_output_is_guaranteed(client: openai.OpenAI) -> None:
    parsed = client.responses.parse(
        model=MODEL, input="Name the capital of France.", text_format=City, max_output_tokens=60, temperature=0
    )
    assert parsed.status == "completed"
    assert isinstance(parsed.output_parsed, City) and parsed.output_parsed.name
