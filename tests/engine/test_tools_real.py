"""Tool calling on the real embedded model through the official `openai` SDK: forced calls are
always valid calls, `auto` lets the model choose, a two-turn loop completes, and a streamed call
reassembles into the same call as the non-streamed one with the same seed."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import openai
import pytest

from tests.conftest import MODEL
from tests.engine.conftest import ADD, WEATHER, function_tool

TOOLS: list[Any] = [WEATHER, ADD]
PARAMETERS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


def ask(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def check_calls(message: Any, names: frozenset[str] = frozenset(PARAMETERS)) -> None:
    """Every call names an offered function and its arguments parse and validate."""
    assert message.tool_calls, message
    for call in message.tool_calls:
        assert call.type == "function" and call.id.startswith("call_")
        assert call.function.name in names
        jsonschema.validate(json.loads(call.function.arguments), PARAMETERS[call.function.name])
    assert len({call.id for call in message.tool_calls}) == len(message.tool_calls)


FORCED: list[tuple[str, Any, bool]] = [
    ("What's the weather in Paris?", "required", False),
    ("What is 17 plus 25?", "required", False),
    ("Tell me a joke.", "required", False),  # no tool fits: a call is still forced, and valid
    ("Weather in Rome and in Oslo?", "required", True),
    ("Hello!", {"type": "function", "function": {"name": "add"}}, False),
    ("How warm is it in Lima, in fahrenheit?", {"type": "function", "function": {"name": "get_weather"}}, True),
]


def test_forced_tool_calls_are_always_valid(engine_client: openai.OpenAI) -> None:
    for seed, (prompt, choice, parallel) in enumerate(FORCED):
        completion = engine_client.chat.completions.create(
            model=MODEL,
            messages=ask(prompt),
            tools=TOOLS,
            tool_choice=choice,
            parallel_tool_calls=parallel,
            max_tokens=120,
            seed=seed,
        )
        (result,) = completion.choices
        assert result.finish_reason == "tool_calls", (prompt, result)
        assert result.message.content is None
        named = frozenset({choice["function"]["name"]} if isinstance(choice, dict) else PARAMETERS)
        check_calls(result.message, named)
        if not parallel:
            assert len(result.message.tool_calls or ()) == 1
        usage = completion.usage
        assert usage is not None and 0 < usage.completion_tokens <= 120


def test_auto_lets_the_model_answer_or_call(engine_client: openai.OpenAI) -> None:
    seen = set()
    for seed, prompt in enumerate(["What is 2 plus 40?", "Write a Python function that reverses a string."]):
        (result,) = engine_client.chat.completions.create(
            model=MODEL, messages=ask(prompt), tools=TOOLS, max_tokens=60, seed=seed
        ).choices
        if result.message.tool_calls:
            assert result.finish_reason == "tool_calls" and result.message.content is None
            check_calls(result.message)
            seen.add("call")
        else:
            assert result.finish_reason in ("stop", "length") and isinstance(result.message.content, str)
            assert not result.message.content.startswith("{")  # text never starts like a call
            seen.add("text")
    assert seen  # which branch the model takes is its choice; either way the protocol holds


def test_two_turn_tool_loop_completes(engine_client: openai.OpenAI) -> None:
    messages = ask("What's the weather in Paris?")
    first = engine_client.chat.completions.create(
        model=MODEL, messages=messages, tools=TOOLS, tool_choice="required", parallel_tool_calls=False, seed=3
    )
    message = first.choices[0].message
    check_calls(message)
    (call,) = message.tool_calls or []
    result = {"temperature": 18, "conditions": "sunny"}
    messages += [message, {"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)}]  # type: ignore[list-item]
    final = engine_client.chat.completions.create(
        model=MODEL, messages=messages, tools=TOOLS, tool_choice="none", max_tokens=24, seed=3
    )
    (answer,) = final.choices
    assert answer.finish_reason in ("stop", "length") and answer.message.content
    assert not answer.message.tool_calls
    # The call and its result reach the model through its chat template: the prompt is that much longer.
    without = engine_client.chat.completions.create(
        model=MODEL, messages=messages[:1], tools=TOOLS, tool_choice="none", max_tokens=1
    )
    assert final.usage is not None and without.usage is not None
    assert final.usage.prompt_tokens >= without.usage.prompt_tokens + 20


def _streamed_calls(chunks: list[Any]) -> list[dict[str, str]]:
    calls: list[dict[str, str]] = []
    for chunk in chunks:
        for delta in chunk.choices[0].delta.tool_calls or () if chunk.choices else ():
            if delta.id is not None:
                assert delta.index == len(calls) and delta.type == "function" and delta.function.arguments == ""
                calls.append({"id": delta.id, "name": delta.function.name, "arguments": ""})
            else:
                assert delta.function.name is None and delta.type is None
                calls[delta.index]["arguments"] += delta.function.arguments
    return calls


def test_streamed_tool_call_reassembles_into_the_non_streamed_one(engine_client: openai.OpenAI) -> None:
    kwargs: dict[str, Any] = dict(
        model=MODEL,
        messages=ask("How warm is it in Madrid?"),
        tools=TOOLS,
        tool_choice="required",
        max_tokens=80,
        temperature=1.0,
        seed=1234,
    )
    whole = engine_client.chat.completions.create(**kwargs).choices[0]
    chunks = list(engine_client.chat.completions.create(**kwargs, stream=True))
    first = chunks[0].choices[0]
    assert first.delta.role == "assistant" and first.delta.content is None and first.delta.tool_calls
    streamed = _streamed_calls(chunks)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    expected = [(c.function.name, c.function.arguments) for c in whole.message.tool_calls or ()]
    assert [(c["name"], c["arguments"]) for c in streamed] == expected and expected
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.tool_calls) > len(expected)  # in pieces
    with engine_client.chat.completions.stream(**kwargs) as stream:
        final = stream.get_final_completion().choices[0]
    assert [(c.function.name, c.function.arguments) for c in final.message.tool_calls or ()] == expected


def test_a_call_cut_by_max_tokens_says_length(engine_client: openai.OpenAI) -> None:
    (result,) = engine_client.chat.completions.create(
        model=MODEL, messages=ask("Weather in Paris?"), tools=TOOLS, tool_choice="required", max_tokens=12, seed=1
    ).choices
    assert result.finish_reason == "length"  # the call may be incomplete: documented


def test_function_without_parameters_gets_empty_arguments(engine_client: openai.OpenAI) -> None:
    ping = function_tool("ping", {"type": "object", "properties": {}, "additionalProperties": False})
    (result,) = engine_client.chat.completions.create(
        model=MODEL, messages=ask("Ping the server."), tools=[ping], tool_choice="required", max_tokens=30, seed=2
    ).choices
    assert result.finish_reason == "tool_calls"
    calls = [(c.function.name, json.loads(c.function.arguments)) for c in result.message.tool_calls or ()]
    assert calls and all(call == ("ping", {}) for call in calls)


BAD_PARAMETERS = {"type": "object", "properties": {"a": {"type": "string"}}, "not": {"required": ["a"]}}


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"tools": [function_tool("bad name", {})]}, "tools[0].function.name"),
        ({"tools": [WEATHER, function_tool("f", {"type": "array"})]}, "tools[1].function.parameters"),
        ({"tools": [WEATHER, WEATHER]}, "tools[1].function.name"),
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice.function.name",
        ),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"parallel_tool_calls": False}, "parallel_tool_calls"),
        ({"tools": [WEATHER, function_tool("g", BAD_PARAMETERS)]}, "tools[1].function.parameters"),
        (
            {"messages": [*ask("hi"), {"role": "tool", "tool_call_id": "call_x", "content": "r"}]},
            "messages[1].tool_call_id",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
            "response_format.json_schema.schema",
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "array", "uniqueItems": True}},
                }
            },
            "response_format.json_schema.schema",
        ),
    ],
)
def test_bad_tool_and_format_requests_are_400_with_param(
    engine_client: openai.OpenAI, kwargs: dict[str, Any], param: str
) -> None:
    body: dict[str, Any] = {"model": MODEL, "messages": ask("hi"), "max_tokens": 4, **kwargs}
    with pytest.raises(openai.BadRequestError) as raised:
        engine_client.chat.completions.create(**body)
    error = raised.value
    assert error.status_code == 400 and error.param == param, error.body
    assert isinstance(error.body, dict) and error.body["type"] == "invalid_request_error"
