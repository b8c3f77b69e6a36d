"""The OpenAI dialect's side of tools, without a model: request validation (400 with ``param``)
and the exact chunk shapes of a streamed tool call, validated against OpenAI's own OpenAPI spec."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from referencing import Registry, Resource

from gatewright.api.http import parse
from gatewright.api.openai.schemas import ChatCompletionRequest
from gatewright.api.openai.stream import ChunkRenderer
from gatewright.api.openai.translate import to_core
from gatewright.core.errors import InvalidRequest
from gatewright.core.events import ChoiceEnd, TextDelta, ToolCallDelta, ToolCallStart, UsageReport
from gatewright.core.types import ToolChoice, Usage
from tests.engine.conftest import ADD, WEATHER, function_tool

SPEC = Path("/work/shared/reference/specs/openai-openapi.json")
ASK = {"role": "user", "content": "Weather in Paris?"}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}


def core(**body: Any) -> Any:
    body.setdefault("model", "m")
    body.setdefault("messages", [ASK])
    return to_core(parse(ChatCompletionRequest, json.dumps(body).encode()))


def test_tools_and_choices_reach_the_core() -> None:
    request = core(tools=[WEATHER, ADD], tool_choice={"type": "function", "function": {"name": "add"}})
    assert [t.name for t in request.tools] == ["get_weather", "add"]
    assert request.tool_choice == ToolChoice("named", "add") and request.parallel_tool_calls
    assert core(tools=[WEATHER]).tool_choice == ToolChoice("auto")
    assert core().tool_choice == ToolChoice("none")
    assert not core(tools=[WEATHER], parallel_tool_calls=False).parallel_tool_calls
    no_parameters = core(tools=[{"type": "function", "function": {"name": "ping"}}]).tools[0]
    assert no_parameters.parameters == {"type": "object", "properties": {}}


def test_a_tool_loop_round_trips() -> None:
    request = core(
        tools=[WEATHER],
        messages=[ASK, {"role": "assistant", "content": None, "tool_calls": [CALL]}, _result("call_1")],
    )
    assert [m.role for m in request.messages] == ["user", "assistant", "tool"]


def _result(call_id: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": "18 C"}


SECOND = {**CALL, "id": "call_2"}
NO_ARGUMENTS = {"id": "c", "function": {"name": "f"}}
NAMED_UNKNOWN = {"type": "function", "function": {"name": "nope"}}


def calling(*calls: dict[str, Any]) -> dict[str, Any]:
    return {"role": "assistant", "content": None, "tool_calls": list(calls)}


def schema_format(json_schema: dict[str, Any]) -> dict[str, Any]:
    return {"response_format": {"type": "json_schema", "json_schema": json_schema}}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": [function_tool("bad name!", {})]}, "tools[0].function.name"),
        ({"tools": [function_tool("x" * 65, {})]}, "tools[0].function.name"),
        ({"tools": [WEATHER, function_tool("f", {"type": "string"})]}, "tools[1].function.parameters"),
        ({"tools": [WEATHER, ADD, WEATHER]}, "tools[2].function.name"),
        ({"tools": [function_tool(f"f{i}", {}) for i in range(129)]}, "tools"),
        ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
        ({"tools": [{"type": "function", "function": {"description": "no name"}}]}, "tools[0].function.name"),
        ({"tools": [WEATHER], "tool_choice": NAMED_UNKNOWN}, "tool_choice.function.name"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": "always"}, "tool_choice"),
        ({"parallel_tool_calls": True}, "parallel_tool_calls"),
        ({"messages": [ASK, _result("call_9")]}, "messages[1].tool_call_id"),
        ({"messages": [ASK, calling(CALL), _result("call_9")]}, "messages[2].tool_call_id"),
        ({"messages": [ASK, calling(CALL), ASK]}, "messages[1].tool_calls"),
        ({"messages": [ASK, calling(CALL, SECOND), _result("call_2")]}, "messages[1].tool_calls"),
        ({"messages": [ASK, calling(CALL), _result("call_1"), _result("call_1")]}, "messages[3].tool_call_id"),
        ({"messages": [ASK, calling(NO_ARGUMENTS)]}, "messages[1].tool_calls[0].function.arguments"),
        (schema_format({"name": "x"}), "response_format.json_schema.schema"),
        (schema_format({"schema": {}}), "response_format.json_schema.name"),
        (schema_format({"name": "a b", "schema": {}}), "response_format.json_schema.name"),
        ({"response_format": {"type": "yaml"}}, "response_format"),
    ],
)
def test_bad_tool_requests_name_the_parameter(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        core(**body)
    assert raised.value.param == param and raised.value.status == 400, raised.value.message


def _nullable(node: Any) -> Any:
    """OpenAPI's ``nullable: true`` as JSON Schema (the spec still uses the 3.0 keyword)."""
    if isinstance(node, list):
        return [_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _nullable(value) for key, value in node.items() if key != "nullable"}
    return {"anyOf": [out, {"type": "null"}]} if node.get("nullable") is True else out


def _validator(name: str) -> jsonschema.protocols.Validator:
    spec = _nullable(json.loads(SPEC.read_text()))
    registry: Registry[Any] = Registry().with_resource("spec", Resource.opaque(spec))
    ref = {"$ref": f"spec#/components/schemas/{name}"}
    return jsonschema.Draft202012Validator(ref, registry=registry)


def test_streamed_tool_calls_have_openais_exact_chunk_shapes() -> None:
    renderer = ChunkRenderer("chatcmpl-1", 1, "m", include_usage=False)
    events = [
        ToolCallStart(0, 0, "call_a", "get_weather"),
        ToolCallDelta(0, 0, '{"city": '),
        ToolCallDelta(0, 0, '"Paris"}'),
        ToolCallStart(0, 1, "call_b", "add"),
        ToolCallDelta(0, 1, '{"a": 1, "b": 2}'),
        ChoiceEnd(0, "tool_calls"),
        UsageReport(Usage(3, 4)),
    ]
    frames = [frame for event in events for frame in renderer.render(event)] + renderer.close()
    chunks = [json.loads(frame.removeprefix(b"data: ")) for frame in frames]
    validator = _validator("CreateChatCompletionStreamResponse")
    for chunk in chunks:
        # Real OpenAI streams send "system_fingerprint": null, which the spec's plain string type omits.
        validator.validate({key: value for key, value in chunk.items() if key != "system_fingerprint"})
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks]
    assert deltas[0] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
        ],
        "refusal": None,
    }
    assert deltas[1] == {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}
    assert deltas[3]["tool_calls"][0] == {
        "index": 1,
        "id": "call_b",
        "type": "function",
        "function": {"name": "add", "arguments": ""},
    }
    assert deltas[-1] == {} and chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert len(chunks) == 6


def test_a_text_stream_keeps_its_role_chunk() -> None:
    renderer = ChunkRenderer("chatcmpl-1", 1, "m", include_usage=False)
    frames = renderer.render(TextDelta(0, "Hi"))
    first = json.loads(frames[0].removeprefix(b"data: "))
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
