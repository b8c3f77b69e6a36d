"""The Responses API over HTTP on a gateway serving the deterministic ``fake`` backend: the Response
object and every stream event against OpenAI's spec, event order, stored responses and their
account scoping, the ``model:responses`` scope, limits and billing, failures."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.responses.conftest import new_key
from tests.responses.wire import assert_error, check, check_stream, get, kinds, post
from tests.support.app import AppGateway
from tests.support.procs import Gateway
from tests.upstream.conftest import Store

TEXT_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    *["response.output_text.delta"] * 3,
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]
TOOL = {
    "type": "function",
    "name": "lookup",
    "description": "Look a word up",
    "parameters": {"type": "object", "properties": {"echo": {"type": "string"}}, "required": ["echo"]},
    "strict": True,
}


def store_of(gw: Gateway | AppGateway) -> Store:
    return Store(gw.data_dir / "gatewright.db")


def test_a_whole_response_has_openais_shape(fake_gateway: AppGateway) -> None:
    body = {
        "model": "echo-alias",
        "input": "one two three",
        "instructions": "Echo it.",
        "metadata": {"ticket": "17"},
        "user": "u-1",
        "temperature": 0.5,
    }
    response = post(fake_gateway, body)
    assert response.status_code == 200, response.text
    assert response.headers["x-gatewright-deployment"]
    data = response.json()
    check("Response", data)
    assert data["object"] == "response" and data["id"].startswith("resp_") and data["model"] == "echo"
    assert data["status"] == "completed" and data["incomplete_details"] is None and data["error"] is None
    (message,) = data["output"]
    assert message["type"] == "message" and message["role"] == "assistant" and message["status"] == "completed"
    assert message["content"] == [{"type": "output_text", "text": "one two three", "annotations": [], "logprobs": []}]
    assert data["output_text"] == "one two three"
    assert (data["instructions"], data["metadata"], data["user"], data["temperature"]) == (
        "Echo it.",
        {"ticket": "17"},
        "u-1",
        0.5,
    )
    usage = data["usage"]
    assert usage["output_tokens"] == 3 and usage["input_tokens"] > 3
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert usage["input_tokens_details"]["cached_tokens"] == 0
    assert usage["output_tokens_details"]["reasoning_tokens"] == 0
    meta = data["meta"]["usage"]
    # echo: 1 USD per million prompt tokens, 2 per million output tokens; 2,000,000 credits = 1 USD.
    assert meta["credits_used"] == usage["input_tokens"] * 2 + 3 * 4
    assert meta["usd_spent"] == pytest.approx(meta["credits_used"] / 2_000_000)


def test_streamed_text_events_in_order_and_valid(fake_gateway: AppGateway) -> None:
    response = post(fake_gateway, {"model": "echo", "input": "alpha beta gamma", "stream": True})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = check_stream(response.content)
    assert kinds(events) == TEXT_EVENTS
    created, in_progress, added, part, *deltas, text_done, part_done, item_done, completed = events
    assert created["response"]["status"] == in_progress["response"]["status"] == "in_progress"
    assert created["response"]["output"] == []
    item_id = added["item"]["id"]
    assert all(e["item_id"] == item_id for e in [part, *deltas, text_done, part_done])
    assert "".join(e["delta"] for e in deltas) == text_done["text"] == "alpha beta gamma"
    assert part_done["part"]["text"] == "alpha beta gamma" and item_done["item"]["status"] == "completed"
    final = completed["response"]
    assert final["status"] == "completed" and final["output"] == [item_done["item"]]
    assert final["usage"]["output_tokens"] == 3 and final["meta"]["usage"]["credits_used"] > 0
    # Stored before `response.completed` went out: readable at once, and the same object.
    stored = get(fake_gateway, f"/v1/responses/{final['id']}")
    assert stored.status_code == 200 and stored.json() == final


@pytest.mark.parametrize("stream", [False, True])
def test_running_out_of_output_tokens_is_incomplete(fake_gateway: AppGateway, stream: bool) -> None:
    words = " ".join(f"w{i}" for i in range(40))
    response = post(fake_gateway, {"model": "echo", "input": words, "max_output_tokens": 16, "stream": stream})
    if stream:
        events = check_stream(response.content)
        assert events[-1]["type"] == "response.incomplete"
        data = events[-1]["response"]
    else:
        data = response.json()
        check("Response", data)
    assert data["status"] == "incomplete" and data["incomplete_details"] == {"reason": "max_output_tokens"}
    assert data["output"][0]["status"] == "incomplete" and data["usage"]["output_tokens"] == 16
    assert data["completed_at"] is None


def test_function_call_stream_then_its_output_continues_the_conversation(fake_gateway: AppGateway) -> None:
    body = {"model": "echo", "input": "find cats", "tools": [TOOL], "tool_choice": "required", "stream": True}
    events = check_stream(post(fake_gateway, body).content)
    assert kinds(events) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    added, delta, done = events[2], events[3], events[4]
    assert added["item"]["type"] == "function_call" and added["item"]["arguments"] == ""
    assert done["name"] == "lookup" and done["arguments"] == delta["delta"] == '{"echo": "find cats"}'
    final = events[-1]["response"]
    (call,) = final["output"]
    assert call["call_id"].startswith("call_") and call["id"].startswith("fc_") and call["status"] == "completed"
    assert final["tools"] == [TOOL] and final["tool_choice"] == "required"

    answer = {"type": "function_call_output", "call_id": call["call_id"], "output": "cats purr"}
    second = post(fake_gateway, {"model": "echo", "input": [answer], "previous_response_id": final["id"]})
    assert second.status_code == 200, second.text
    data = second.json()
    check("Response", data)
    assert data["previous_response_id"] == final["id"]
    # The fake echoes the last user message: the first turn's question, reached through the chain.
    assert data["output_text"] == "find cats"
    listed = get(fake_gateway, f"/v1/responses/{data['id']}/input_items", order="asc").json()
    check("ResponseItemList", listed)
    assert [i["type"] for i in listed["data"]] == ["message", "function_call", "function_call_output"]
    assert listed["data"][1]["call_id"] == call["call_id"] and listed["data"][2]["output"] == "cats purr"


def test_a_call_without_its_output_or_an_output_without_its_call_is_refused(fake_gateway: AppGateway) -> None:
    call = {"type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": "{}"}
    hi = {"role": "user", "content": "hi"}
    response = post(fake_gateway, {"model": "echo", "input": [hi, call, hi], "tools": [TOOL]})
    assert_error(response, 400, "input[1]", "missing_function_call_output")
    orphan = {"type": "function_call_output", "call_id": "call_9", "output": "x"}
    assert_error(post(fake_gateway, {"model": "echo", "input": [hi, orphan]}), 400, "input[1].call_id")


def test_reasoning_comes_as_a_reasoning_item(fake_gateway: AppGateway) -> None:
    body = {"model": "thinker", "input": "<think> weigh it </think> settled", "reasoning": {"effort": "low"}}
    events = check_stream(post(fake_gateway, {**body, "stream": True}).content)
    assert kinds(events)[2:10] == [
        "response.output_item.added",
        "response.content_part.added",
        *["response.reasoning_text.delta"] * 3,
        "response.reasoning_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ]
    final = events[-1]["response"]
    reasoning, message = final["output"]
    assert reasoning["type"] == "reasoning" and reasoning["content"] == [
        {"type": "reasoning_text", "text": " weigh it "}
    ]
    assert reasoning["summary"] == [] and message["content"][0]["text"] == " settled"
    assert final["output_text"] == " settled" and final["reasoning"]["effort"] == "low"
    assert final["usage"]["output_tokens_details"]["reasoning_tokens"] == 3
    whole = post(fake_gateway, body).json()
    check("Response", whole)
    assert [i["type"] for i in whole["output"]] == ["reasoning", "message"]


def test_a_reasoning_hint_to_a_model_that_cannot_reason_is_ignored_and_said(fake_gateway: AppGateway) -> None:
    response = post(fake_gateway, {"model": "echo", "input": "hi", "reasoning": {"effort": "high"}})
    assert response.status_code == 200
    assert response.headers["x-gatewright-reasoning"] == "ignored: model does not reason"


def test_failure_mid_stream_is_response_failed_and_not_billed(fake_gateway: AppGateway) -> None:
    store = store_of(fake_gateway)
    before = store.balance()
    events = check_stream(post(fake_gateway, {"model": "dies-midway", "input": "a b c d e", "stream": True}).content)
    assert kinds(events)[-2:] == ["response.output_item.done", "response.failed"]
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
    assert events[-2]["item"]["status"] == "incomplete"
    assert store.balance() == before
    assert get(fake_gateway, f"/v1/responses/{failed['id']}").status_code == 404  # failed: not stored


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "echo", "input": "x", "seed": 1}, 400, "seed"),
        ({"model": "echo", "input": "x", "background": True}, 400, "background"),
        ({"model": "echo", "input": "x", "truncation": "auto"}, 400, "truncation"),
        ({"model": "echo", "input": "x", "text": {"verbosity": "low"}}, 400, "text.verbosity"),
        ({"model": "echo", "input": "x", "conversation": "conv_1"}, 400, "conversation"),
        ({"model": "echo", "input": "x", "tools": [{"type": "web_search"}]}, 400, "tools[0].type"),
        ({"model": "echo", "input": "x", "tool_choice": {"type": "file_search"}}, 400, "tool_choice.type"),
        ({"model": "echo", "input": [{"type": "item_reference", "id": "msg_1"}]}, 400, "input[0].type"),
        ({"model": "echo", "input": [{"role": "user", "content": [{"type": "input_file"}]}]}, 400, None),
        ({"model": "echo", "input": "x", "max_output_tokens": 4}, 400, "max_output_tokens"),
        ({"model": "echo"}, 400, "input"),
        ({"model": "echo", "input": "x", "previous_response_id": "resp_nope"}, 400, "previous_response_id"),
        ({"model": "pricey", "input": "x", "text": {"format": {"type": "json_schema", "name": "n", "schema": {}}}}, 400,
         "text.format"),
        ({"model": "nope", "input": "x"}, 404, None),
    ],
)  # fmt: skip
def test_bad_requests_name_the_field(fake_gateway: AppGateway, body: dict[str, Any], status: int, param: str) -> None:
    assert_error(post(fake_gateway, body), status, param)


def test_refusals_before_any_work_cost_nothing(fake_gateway: AppGateway) -> None:
    store = store_of(fake_gateway)
    before = store.balance()
    response = post(fake_gateway, {"model": "pricey", "input": "x"})
    assert_error(response, 402)
    assert post(fake_gateway, {"model": "broken", "input": "x"}).status_code >= 500
    assert store.balance() == before


def test_the_responses_scope_is_required_here(fake_gateway: AppGateway, http: httpx.Client) -> None:
    chat_only = new_key(fake_gateway, ["model:chat"])
    assert_error(post(fake_gateway, {"model": "echo", "input": "x"}, key=chat_only), 403, code="missing_scope")
    mine = post(fake_gateway, {"model": "echo", "input": "x"}).json()["id"]
    for path in (f"/v1/responses/{mine}", f"/v1/responses/{mine}/input_items"):
        assert_error(get(fake_gateway, path, key=chat_only), 403, code="missing_scope")
    deleted = http.delete(f"{fake_gateway.url}/v1/responses/{mine}", headers={"authorization": f"Bearer {chat_only}"})
    assert_error(deleted, 403, code="missing_scope")
    # ... and only here: a responses-only key answers here, not on chat completions.
    responses_only = new_key(fake_gateway, ["model:responses"])
    assert post(fake_gateway, {"model": "echo", "input": "x"}, key=responses_only).status_code == 200
    chat = http.post(
        f"{fake_gateway.url}/v1/chat/completions",
        json={"model": "echo", "messages": [{"role": "user", "content": "x"}]},
        headers={"authorization": f"Bearer {responses_only}"},
    )
    assert_error(chat, 403, code="missing_scope")
    assert_error(post(fake_gateway, {"model": "echo", "input": "x"}, key="0" * 32), 401)


def test_rate_limits_apply_with_their_headers(fake_gateway: AppGateway) -> None:
    key = new_key(fake_gateway, ["model:responses"], requests_per_minute=1)
    first = post(fake_gateway, {"model": "echo", "input": "x"}, key=key)
    assert first.status_code == 200 and first.headers["x-ratelimit-limit-requests"] == "1"
    second = post(fake_gateway, {"model": "echo", "input": "x", "stream": True}, key=key)
    assert_error(second, 429, code="rate_limit_requests")
    assert int(second.headers["retry-after"]) >= 1


def test_stored_responses_list_page_and_delete(fake_gateway: AppGateway, http: httpx.Client) -> None:
    first = post(fake_gateway, {"model": "echo", "input": [{"role": "user", "content": "one"}]}).json()
    items = [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "input_text", "text": "two"}]},
        {"type": "message", "role": "assistant", "content": "noted"},
        {"role": "user", "content": "three"},
    ]
    second = post(fake_gateway, {"model": "echo", "input": items, "previous_response_id": first["id"]}).json()
    assert second["output_text"] == "three"
    path = f"/v1/responses/{second['id']}/input_items"
    everything = get(fake_gateway, path, order="asc").json()
    check("ResponseItemList", everything)
    roles = [i.get("role") for i in everything["data"]]
    assert roles == ["user", "assistant", "developer", "user", "assistant", "user"]
    assert everything["data"][1]["id"] == first["output"][0]["id"]  # the first turn's output, as it was
    assert everything["has_more"] is False and everything["first_id"] == everything["data"][0]["id"]
    newest = get(fake_gateway, path).json()  # default: newest first
    assert [i["id"] for i in newest["data"]] == [i["id"] for i in reversed(everything["data"])]
    page = get(fake_gateway, path, order="asc", limit=2, after=everything["data"][1]["id"]).json()
    assert [i["id"] for i in page["data"]] == [i["id"] for i in everything["data"][2:4]] and page["has_more"]
    assert_error(get(fake_gateway, path, limit=0), 400, "limit")
    assert_error(get(fake_gateway, path, colour="red"), 400, "colour")

    url = f"{fake_gateway.url}/v1/responses/{second['id']}"
    auth = {"authorization": f"Bearer {fake_gateway.api_key}"}
    deleted = http.delete(url, headers=auth)
    assert deleted.status_code == 200 and deleted.json() == {"id": second["id"], "object": "response", "deleted": True}
    assert_error(http.get(url, headers=auth), 404, code="not_found")
    assert_error(http.delete(url, headers=auth), 404)
    assert_error(get(fake_gateway, path), 404)


def test_a_response_is_visible_only_to_its_own_account(fake_gateway: AppGateway, http: httpx.Client) -> None:
    mine = post(fake_gateway, {"model": "echo", "input": "secret plans"}).json()["id"]
    other = new_key(fake_gateway, ["model:responses"], new_account=True)
    assert_error(get(fake_gateway, f"/v1/responses/{mine}", key=other), 404)
    assert_error(get(fake_gateway, f"/v1/responses/{mine}/input_items", key=other), 404)
    carried = post(fake_gateway, {"model": "echo", "input": "x", "previous_response_id": mine}, key=other)
    assert_error(carried, 400, "previous_response_id", "previous_response_not_found")
    deleted = http.delete(f"{fake_gateway.url}/v1/responses/{mine}", headers={"authorization": f"Bearer {other}"})
    assert_error(deleted, 404)
    assert get(fake_gateway, f"/v1/responses/{mine}").status_code == 200  # still there for its owner
    # A key of the same account sees it.
    sibling = new_key(fake_gateway, ["model:responses"])
    assert get(fake_gateway, f"/v1/responses/{mine}", key=sibling).status_code == 200


def test_store_false_keeps_nothing(fake_gateway: AppGateway) -> None:
    data = post(fake_gateway, {"model": "echo", "input": "ephemeral", "store": False}).json()
    assert data["store"] is False
    assert_error(get(fake_gateway, f"/v1/responses/{data['id']}"), 404)
    carried = post(fake_gateway, {"model": "echo", "input": "x", "previous_response_id": data["id"]})
    assert_error(carried, 400, "previous_response_id", "previous_response_not_found")


def test_instructions_are_not_carried_to_the_next_response(fake_gateway: AppGateway) -> None:
    first = post(fake_gateway, {"model": "echo", "input": "hi", "instructions": "one two three four five"}).json()
    second = post(fake_gateway, {"model": "echo", "input": "hi", "previous_response_id": first["id"]}).json()
    # The fake counts words + 3 per message: the second prompt is hi, the answer, hi (no instructions).
    assert first["usage"]["input_tokens"] == (5 + 3) + (1 + 3)
    assert second["usage"]["input_tokens"] == 3 * (1 + 3)


def test_bare_gateway_keeps_responses_in_memory_for_the_retention(bare_gateway: AppGateway) -> None:
    response = bare_gateway.http.post("/v1/responses", json={"model": "echo", "input": "hi"})
    assert response.status_code == 200  # no key: a bare proxy has none
    url = f"{bare_gateway.url}/v1/responses/{response.json()['id']}"
    assert bare_gateway.http.get(url).status_code == 200
    deadline = time.monotonic() + 30
    while bare_gateway.http.get(url).status_code == 200:  # retention is 6 seconds
        assert time.monotonic() < deadline, "a stored response outlived its retention"
        time.sleep(0.5)
    assert_error(bare_gateway.http.get(url), 404)
