"""The Responses API in front of upstreams: a real ``llama_cpp.server`` (OpenAI-compatible) and the
recorded Anthropic Messages streams, each through a real gateway process, with the official
``openai`` SDK and raw SSE validated against OpenAI's spec. Requests to the real server are few and
a handful of tokens long: it runs on one thread of a shared machine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import openai
from openai.types.responses import ResponseFunctionToolCall

from tests.responses.wire import check, check_stream, kinds
from tests.support.anthropic_sse import anthropic_stream
from tests.support.app import AppGateway
from tests.support.faulty_upstream import FaultyUpstream, sse
from tests.support.procs import Gateway

RECORDED = Path(__file__).resolve().parent.parent / "fixtures" / "anthropic_upstream"


def tool(name: str, parameter: str) -> dict[str, Any]:
    schema = {"type": "object", "properties": {parameter: {"type": "string"}}, "required": [parameter]}
    return {"type": "function", "name": name, "description": f"{name} tool", "parameters": schema, "strict": False}


WEATHER, TIME = tool("get_weather", "city"), tool("get_time", "zone")


def post(gw: Gateway | AppGateway, body: dict[str, Any]) -> httpx.Response:
    headers = {"authorization": f"Bearer {gw.api_key}"}
    return gw.http.post("/v1/responses", json=body, headers=headers)


# -- llama_cpp.server -------------------------------------------------------------------------


def test_llama_server_streams_a_response(llama_gateway: Gateway, llama_client: openai.OpenAI) -> None:
    with llama_client.responses.stream(
        model="served-qwen", input="Say hello.", max_output_tokens=16, temperature=0
    ) as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert deltas and "".join(deltas) == final.output_text
    assert final.model == "served-qwen" and final.status in ("completed", "incomplete")
    assert final.usage is not None and 0 < final.usage.output_tokens <= 16
    # The same on the raw wire, every event against the spec.
    events = check_stream(
        post(llama_gateway, {"model": "served", "input": "Hi", "max_output_tokens": 16, "stream": True}).content
    )
    assert events[-1]["type"] in ("response.completed", "response.incomplete")
    assert events[-1]["response"]["meta"]["usage"]["credits_used"] > 0


def test_llama_server_tool_loop_with_previous_response_id(llama_client: openai.OpenAI) -> None:
    first = llama_client.responses.create(
        model="served-qwen",
        input="Weather in Paris?",
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "function", "name": "get_weather"},
        max_output_tokens=24,
        temperature=0,
    )
    (call,) = first.output
    assert isinstance(call, ResponseFunctionToolCall) and call.name == "get_weather"
    assert isinstance(json.loads(call.arguments), dict)
    second = llama_client.responses.create(
        model="served-qwen",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"}],
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="none",
        max_output_tokens=16,
        temperature=0,
    )
    assert second.output_text and second.usage is not None and first.usage is not None
    # The stored call and its output reached the upstream: the second prompt is the longer one.
    assert second.usage.input_tokens > first.usage.input_tokens


# -- the recorded Anthropic upstream ------------------------------------------------------------


def test_anthropic_thinking_and_two_calls_stream_as_items(fault_gateway: AppGateway, faulty: FaultyUpstream) -> None:
    faulty.script("anthropic-flaky", sse((RECORDED / "thinking_tool.stream.sse").read_bytes(), pieces=13))
    body = {
        "model": "anthropic-flaky",
        "input": "Weather and time in Paris?",
        "tools": [WEATHER, TIME],
        "stream": True,
    }
    events = check_stream(post(fault_gateway, body).content)
    items = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert [i["type"] for i in items] == ["reasoning", "message", "function_call", "function_call"]
    assert items[0]["content"][0]["text"] == "The user wants the weather in Paris; I should call the tool."
    assert items[1]["content"][0]["text"] == "Let me check."
    calls = [(i["call_id"], i["name"], json.loads(i["arguments"])) for i in items[2:]]
    assert calls == [("toolu_01A", "get_weather", {"city": "Paris"}), ("toolu_01B", "get_time", {"zone": "CET"})]
    assert kinds(events).count("response.function_call_arguments.done") == 2
    final = events[-1]["response"]
    assert final["status"] == "completed" and final["output"] == items
    usage = final["usage"]
    assert (usage["input_tokens"], usage["input_tokens_details"]["cached_tokens"], usage["output_tokens"]) == (
        200,
        80,
        57,
    )
    sent = faulty.seen("anthropic-flaky")[-1].body
    assert [t["name"] for t in sent["tools"]] == ["get_weather", "get_time"] and sent["stream"] is True


def test_anthropic_whole_answer_and_its_continuation(fault_gateway: AppGateway, faulty: FaultyUpstream) -> None:
    whole = json.loads((RECORDED / "thinking_tool.response.json").read_text())
    faulty.script("anthropic-flaky", sse(anthropic_stream(whole)))  # the gateway asks upstreams for a stream
    client = fault_gateway.openai()
    first = client.responses.create(model="anthropic-flaky", input="Weather in Paris?", tools=[WEATHER])  # type: ignore[list-item]
    check("Response", client.responses.retrieve(first.id).model_dump(mode="json", exclude_unset=True))
    assert [item.type for item in first.output] == ["reasoning", "message", "function_call"]
    assert first.output_text == "Let me check."
    usage = first.usage
    assert usage is not None and usage.input_tokens == 100 and usage.input_tokens_details.cached_tokens == 50
    call = first.output[2]
    assert isinstance(call, ResponseFunctionToolCall) and call.call_id == "toolu_01A"

    message = {"id": "msg_2", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
               "content": [{"type": "text", "text": "Sunny in Paris."}], "stop_reason": "end_turn",
               "stop_sequence": None, "usage": {"input_tokens": 130, "output_tokens": 5}}  # fmt: skip
    faulty.script("anthropic-flaky", sse(anthropic_stream(message)))
    answer = {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"}
    second = client.responses.create(
        model="anthropic-flaky",
        previous_response_id=first.id,
        input=[answer],
        tools=[WEATHER],  # type: ignore[list-item]
    )
    assert second.output_text == "Sunny in Paris."
    # The stored turn went upstream as Anthropic blocks: text and tool_use, then the result. (Its
    # thinking stays behind: the Responses dialect stores no signature for it, and Anthropic takes
    # earlier thinking only with the signature it issued.)
    turns = faulty.seen("anthropic-flaky")[-1].body["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert [b["type"] for b in turns[1]["content"]] == ["text", "tool_use"]
    assert turns[2]["content"][0]["type"] == "tool_result" and turns[2]["content"][0]["tool_use_id"] == "toolu_01A"
