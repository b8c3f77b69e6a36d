"""The task API's wire on a real gateway process serving the deterministic ``fake`` backend: the
envelope, authentication, batches, retries, async polling, streaming and failures. The fake echoes
the last user message one word per token, so every text here is known in advance."""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson
import pytest

from tests.support.app import AppGateway
from tests.tasks.conftest import new_uuid, post, text_task
from tests.tasks.store import billed, charges_of, task_row

CREDITS_PER_USD = 2_000_000


def sse(response: httpx.Response) -> list[Any]:
    frames = [line[6:] for line in response.text.split("\n") if line.startswith("data: ")]
    assert frames[-1] == "[DONE]", frames
    return [orjson.loads(f) for f in frames[:-1]]


def poll(gw: AppGateway, task_uuid: str, until: str = "done", timeout: float = 30.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = post(gw, [{"taskType": "getResponse", "taskUUID": task_uuid}])
        assert response.status_code == 200, response.text
        items = response.json()["data"]
        if until == "done" and all(i["status"] != "processing" for i in items):
            return items
        if until == "processing" and any(i["status"] == "processing" for i in items):
            return items
        time.sleep(0.05)
    raise TimeoutError(f"task {task_uuid} not {until} in {timeout}s")


# -- the envelope ------------------------------------------------------------------------------


def test_sync_result_shape_cost_and_usage(fake_gateway: AppGateway) -> None:
    task = text_task(includeCost=True, includeUsage=True, seed=12)
    response = post(fake_gateway, [task])
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["data"]  # a successful answer has no errors key at all
    (item,) = body["data"]
    assert item == {
        "taskType": "textInference",
        "taskUUID": task["taskUUID"],
        "status": "success",
        "resultIndex": 0,
        "text": "one two three",
        "finishReason": "stop",
        "seed": 12,
        "cost": item["cost"],
        "usage": {"promptTokens": 6, "completionTokens": 3, "totalTokens": 9, "thinkingTokens": 0},
    }
    (usage,) = billed(fake_gateway, task["taskUUID"], 1)
    assert usage["request_id"] == f"task_{task['taskUUID']}_0_1" and usage["status"] == "ok"
    assert item["cost"] == pytest.approx(usage["credits"] / CREDITS_PER_USD) and usage["credits"] > 0


def test_flags_off_leave_cost_and_usage_out(fake_gateway: AppGateway) -> None:
    (item,) = post(fake_gateway, [text_task()]).json()["data"]
    assert "cost" not in item and "usage" not in item and isinstance(item["seed"], int)


def test_tasks_path_air_alias_and_length(fake_gateway: AppGateway) -> None:
    task = text_task(model="fake:echo@1", settings={"maxTokens": 2})
    (item,) = post(fake_gateway, [task], path="/v1/tasks").json()["data"]
    assert (item["text"], item["finishReason"]) == ("one two", "length")


def test_stop_sequences_and_system_prompt(fake_gateway: AppGateway) -> None:
    task = text_task(
        messages=[{"role": "user", "content": "alpha beta STOP gamma"}],
        settings={"systemPrompt": "You echo.", "stopSequences": ["STOP"]},
    )
    (item,) = post(fake_gateway, [task]).json()["data"]
    assert item["text"] == "alpha beta" and item["finishReason"] == "stop"


def test_ping(fake_gateway: AppGateway) -> None:
    response = post(fake_gateway, [{"taskType": "ping", "ping": True}])
    assert response.status_code == 200 and response.json() == {"data": [{"taskType": "ping", "pong": True}]}


# -- authentication ------------------------------------------------------------------------------


def test_authentication_task_instead_of_header(fake_gateway: AppGateway) -> None:
    auth = {"taskType": "authentication", "apiKey": fake_gateway.api_key}
    response = post(fake_gateway, [auth, text_task()], key=None)
    assert response.status_code == 200
    assert [i["text"] for i in response.json()["data"]] == ["one two three"]


@pytest.mark.parametrize(
    ("tasks", "key", "code", "task_type", "parameter"),
    [
        ([{"taskType": "ping", "ping": True}], None, "missingApiKey", None, None),
        ([{"taskType": "ping", "ping": True}], "f" * 32, "invalidApiKey", None, None),
        (
            [{"taskType": "authentication", "apiKey": "f" * 32}, {"taskType": "ping", "ping": True}],
            None,
            "invalidApiKey",
            "authentication",
            "apiKey",
        ),
    ],
)
def test_bad_or_missing_key_is_401(
    fake_gateway: AppGateway, tasks: list[Any], key: str | None, code: str, task_type: str | None, parameter: str | None
) -> None:
    response = post(fake_gateway, tasks, key=key)
    assert response.status_code == 401
    (error,) = response.json()["errors"]
    assert (error["code"], error["taskType"], error["parameter"], error["taskUUID"]) == (
        code,
        task_type,
        parameter,
        None,
    )
    assert "data" not in response.json()


def test_authentication_task_must_come_first(fake_gateway: AppGateway) -> None:
    auth = {"taskType": "authentication", "apiKey": fake_gateway.api_key}
    response = post(fake_gateway, [{"taskType": "ping", "ping": True}, auth])
    assert response.status_code == 200
    assert response.json()["data"] == [{"taskType": "ping", "pong": True}]
    (error,) = response.json()["errors"]
    assert (error["code"], error["taskType"]) == ("invalidTaskOrder", "authentication")


# -- batches and validation ----------------------------------------------------------------------


def test_mixed_batch_keeps_order_and_reports_the_invalid_task(fake_gateway: AppGateway) -> None:
    good, bad = text_task(), text_task(settings={"temperature": 3})
    later = text_task(messages=[{"role": "user", "content": "last one"}])
    response = post(fake_gateway, [good, bad, {"taskType": "ping", "ping": True}, later])
    assert response.status_code == 200
    body = response.json()
    assert [i.get("text") or i.get("pong") for i in body["data"]] == ["one two three", True, "last one"]
    assert [i.get("taskUUID") for i in body["data"]] == [good["taskUUID"], None, later["taskUUID"]]
    (error,) = body["errors"]
    assert error == {
        "code": "invalidTemperature",
        "message": error["message"],
        "parameter": "settings.temperature",
        "taskType": "textInference",
        "taskUUID": bad["taskUUID"],
    }
    assert "less than or equal to 1" in error["message"]
    with pytest.raises(AssertionError):
        task_row(fake_gateway, bad["taskUUID"])  # an invalid task is never stored


def test_all_tasks_failing_take_their_status(fake_gateway: AppGateway) -> None:
    response = post(fake_gateway, [text_task(seed=-1), text_task(numberResults=5)])
    assert response.status_code == 400
    assert [e["code"] for e in response.json()["errors"]] == ["invalidSeed", "invalidNumberResults"]
    mixed = post(fake_gateway, [text_task(seed=-1), text_task(model="nobody")])
    assert mixed.status_code == 400  # 400 and 404 together
    assert [e["code"] for e in mixed.json()["errors"]] == ["invalidSeed", "unknownModel"]


def test_same_uuid_twice_in_one_request(fake_gateway: AppGateway) -> None:
    first = text_task()
    second = {**first, "messages": [{"role": "user", "content": "other"}]}
    body = post(fake_gateway, [first, second]).json()
    assert [i["text"] for i in body["data"]] == ["one two three"]
    assert [(e["code"], e["parameter"]) for e in body["errors"]] == [("duplicateTaskUUID", "taskUUID")]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"not json", "invalidRequestBody"),
        (b'{"taskType": "ping", "ping": true}', "invalidRequestBody"),
        (b"[]", "missingTasks"),
        (orjson.dumps([{"taskType": "ping", "ping": True}] * 65), "invalidRequestBody"),
    ],
)
def test_bodies_that_are_not_a_task_array(fake_gateway: AppGateway, body: bytes, code: str) -> None:
    response = fake_gateway.http.post("/v1", content=body, headers={"authorization": f"Bearer {fake_gateway.api_key}"})
    assert response.status_code == 400 and [e["code"] for e in response.json()["errors"]] == [code]


UUID_A = "a770f077-f413-47de-9dac-be0b26a35da6"
WEATHER = {"type": "function", "name": "get_weather", "schema": {"type": "object"}}

# (what to change in a valid task, error code, error parameter): every rule of the schema.
INVALID: list[tuple[dict[str, Any], str, str | None]] = [
    ({"taskUUID": "not-a-uuid"}, "invalidTaskUUID", "taskUUID"),
    ({"taskUUID": "a770f077-f413-17de-9dac-be0b26a35da6"}, "invalidTaskUUID", "taskUUID"),  # v1, not v4
    ({"taskUUID": None}, "invalidTaskUUID", "taskUUID"),
    ({"model": ""}, "invalidModel", "model"),
    ({"model": "nobody:nothing@0"}, "unknownModel", "model"),
    ({"seed": -1}, "invalidSeed", "seed"),
    ({"seed": 2**63}, "invalidSeed", "seed"),
    ({"seed": "x"}, "invalidSeed", "seed"),
    ({"messages": []}, "invalidMessages", "messages"),
    ({"messages": [{"role": "system", "content": "x"}]}, "invalidMessages", "messages[0]"),
    ({"messages": [{"content": "x"}]}, "missingMessageRole", "messages[0].role"),
    ({"messages": [{"role": "user", "content": ""}]}, "invalidMessageContent", "messages[0].content"),
    ({"messages": [{"role": "user"}]}, "missingMessageContent", "messages[0].content"),
    ({"messages": [{"role": "assistant"}]}, "invalidMessages", "messages[0]"),
    ({"messages": [{"role": "tool", "id": "c9", "content": "22C"}]}, "invalidMessageId", "messages[0].id"),
    ({"messages": [{"role": "user", "content": "x", "name": "bob"}]}, "unknownParameter", "messages[0].name"),
    ({"settings": {"systemPrompt": ""}}, "invalidSystemPrompt", "settings.systemPrompt"),
    ({"settings": {"systemPrompt": "x" * 200_001}}, "invalidSystemPrompt", "settings.systemPrompt"),
    ({"settings": {"temperature": -0.1}}, "invalidTemperature", "settings.temperature"),
    ({"settings": {"temperature": 1.01}}, "invalidTemperature", "settings.temperature"),
    ({"settings": {"topP": 0}}, "invalidTopP", "settings.topP"),
    ({"settings": {"topP": 1.5}}, "invalidTopP", "settings.topP"),
    ({"settings": {"topK": -1}}, "invalidTopK", "settings.topK"),
    ({"settings": {"frequencyPenalty": 2.5}}, "invalidFrequencyPenalty", "settings.frequencyPenalty"),
    ({"settings": {"presencePenalty": -2.5}}, "invalidPresencePenalty", "settings.presencePenalty"),
    ({"settings": {"maxTokens": 0}}, "invalidMaxTokens", "settings.maxTokens"),
    ({"settings": {"maxTokens": 131_073}}, "invalidMaxTokens", "settings.maxTokens"),
    ({"settings": {"maxTokens": 5000}}, "invalidMaxTokens", "settings.maxTokens"),  # past the 4096 window
    ({"settings": {"stopSequences": ["a", "b", "c", "d", "e"]}}, "invalidStopSequences", "settings.stopSequences"),
    ({"settings": {"stopSequences": [""]}}, "invalidStopSequences", "settings.stopSequences[0]"),
    ({"settings": {"stopSequences": ["x" * 51]}}, "invalidStopSequences", "settings.stopSequences[0]"),
    ({"settings": {"thinkingLevel": "extreme"}}, "invalidThinkingLevel", "settings.thinkingLevel"),
    ({"settings": {"minP": 0.1}}, "unknownParameter", "settings.minP"),
    ({"toolChoice": {"type": "sometimes"}, "tools": [WEATHER]}, "invalidToolChoiceType", "toolChoice.type"),
    ({"toolChoice": {"type": "tool"}, "tools": [WEATHER]}, "invalidToolChoice", "toolChoice"),
    ({"toolChoice": {"type": "tool", "name": "nope"}, "tools": [WEATHER]}, "invalidToolChoiceName", "toolChoice.name"),
    ({"tools": []}, "invalidTools", "tools"),
    ({"tools": [{"type": "function", "name": "bad name!"}]}, "invalidToolName", "tools[0].name"),
    ({"tools": [{"type": "function", "name": "x" * 65}]}, "invalidToolName", "tools[0].name"),
    ({"tools": [{"type": "function"}]}, "missingToolName", "tools[0].name"),
    ({"tools": [WEATHER, WEATHER]}, "duplicateToolName", "tools"),
    ({"tools": [{"type": "webBrowser"}]}, "invalidToolType", "tools[0].type"),
    ({"tools": [{"type": "search"}]}, "unsupportedTool", "tools[0].type"),
    ({"tools": [WEATHER, {"type": "codeInterpreter"}]}, "unsupportedTool", "tools[1].type"),
    ({"numberResults": 0}, "invalidNumberResults", "numberResults"),
    ({"numberResults": 5}, "invalidNumberResults", "numberResults"),
    ({"includeCost": "maybe"}, "invalidIncludeCost", "includeCost"),
    ({"includeUsage": "maybe"}, "invalidIncludeUsage", "includeUsage"),
    ({"webhookURL": "ftp://example.com/x"}, "invalidWebhookURL", "webhookURL"),
    ({"webhookURL": "not a url"}, "invalidWebhookURL", "webhookURL"),
    ({"deliveryMethod": "carrier-pigeon"}, "invalidDeliveryMethod", "deliveryMethod"),
    ({"outputFormat": "JSON"}, "invalidOutputFormat", "outputFormat"),
    ({"inputs": {"images": []}}, "unknownParameter", "inputs"),
]


@pytest.mark.parametrize(("change", "code", "parameter"), INVALID, ids=[c for _, c, _ in INVALID])
def test_every_validation_error(
    fake_gateway: AppGateway, change: dict[str, Any], code: str, parameter: str | None
) -> None:
    task = {**text_task(), **change}
    if task["taskUUID"] is None:
        del task["taskUUID"]
        code = "missingTaskUUID"
    response = post(fake_gateway, [task])
    assert response.status_code == (404 if code == "unknownModel" else 400), response.text
    (error,) = response.json()["errors"]
    assert (error["code"], error["parameter"], error["taskType"]) == (code, parameter, "textInference")
    assert error["message"] and "data" not in response.json()


def test_builtin_tool_error_names_the_tool(fake_gateway: AppGateway) -> None:
    (error,) = post(fake_gateway, [text_task(tools=[{"type": "search"}])]).json()["errors"]
    assert "`search`" in error["message"] and "not available" in error["message"]


@pytest.mark.parametrize(
    ("task", "code", "parameter"),
    [
        ({"taskType": "imageInference", "taskUUID": UUID_A}, "unsupportedTaskType", "taskType"),
        ({"taskUUID": UUID_A}, "missingTaskType", "taskType"),
        ({"taskType": "getResponse"}, "missingTaskUUID", "taskUUID"),
        ({"taskType": "ping", "ping": False}, "invalidPing", "ping"),
        ("ping", "invalidTask", None),
    ],
)
def test_other_task_errors(fake_gateway: AppGateway, task: Any, code: str, parameter: str | None) -> None:
    response = post(fake_gateway, [task])
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert (error["code"], error["parameter"]) == (code, parameter)


# -- identity of tasks: retries and conflicts ------------------------------------------------------


def test_identical_retry_returns_the_stored_result_without_running_again(fake_gateway: AppGateway) -> None:
    task = text_task(numberResults=2, includeCost=True)
    first = post(fake_gateway, [task]).json()
    again = post(fake_gateway, [task]).json()
    as_async = post(fake_gateway, [{**task, "deliveryMethod": "async"}]).json()
    assert again == first
    assert as_async == {"data": [{"taskType": "textInference", "taskUUID": task["taskUUID"]}]}
    assert len(billed(fake_gateway, task["taskUUID"], 2)) == 2  # one run per result, billed once
    assert len(charges_of(fake_gateway, task["taskUUID"])) == 2
    assert task_row(fake_gateway, task["taskUUID"])["attempt"] == 1


def test_uuid_reused_for_a_different_task_is_a_conflict(fake_gateway: AppGateway) -> None:
    task = text_task()
    assert post(fake_gateway, [task]).status_code == 200
    changed = {**task, "messages": [{"role": "user", "content": "something else"}]}
    response = post(fake_gateway, [changed])
    assert response.status_code == 409
    (error,) = response.json()["errors"]
    assert (error["code"], error["parameter"], error["taskUUID"]) == ("conflictTaskUUID", "taskUUID", task["taskUUID"])


def test_uuid_case_does_not_make_a_new_task(fake_gateway: AppGateway) -> None:
    task = text_task()
    post(fake_gateway, [task])
    upper = {**task, "taskUUID": task["taskUUID"].upper()}
    assert post(fake_gateway, [upper]).status_code == 409


def test_failed_task_retried_runs_again_and_bills_once(fake_gateway: AppGateway) -> None:
    task = text_task(model="broken")
    first = post(fake_gateway, [task])
    assert first.status_code == 500
    assert first.json()["errors"][0]["code"] == "providerError"
    again = post(fake_gateway, [task])
    assert again.status_code == 500
    row = task_row(fake_gateway, task["taskUUID"])
    assert row["attempt"] == 2 and row["status"] == "error"
    assert [u["status"] for u in billed(fake_gateway, task["taskUUID"], 2)] == ["error", "error"]
    assert charges_of(fake_gateway, task["taskUUID"]) == []


# -- async and getResponse ----------------------------------------------------------------------


def test_async_ack_then_cumulative_polling(fake_gateway: AppGateway) -> None:
    words = " ".join(f"w{i}" for i in range(20))  # 20 tokens at 0.2 s each: 4 s a result
    task = text_task(
        model="slow", deliveryMethod="async", numberResults=2, messages=[{"role": "user", "content": words}]
    )
    started = time.monotonic()
    response = post(fake_gateway, [task])
    # Sooner than one result takes (a loaded machine may well take more than a second to answer).
    assert time.monotonic() - started < 20 * 0.2
    assert response.json() == {"data": [{"taskType": "textInference", "taskUUID": task["taskUUID"]}]}
    processing = poll(fake_gateway, task["taskUUID"], until="processing")
    for item in processing:
        if item["status"] == "processing":
            assert "text" not in item and set(item) == {"taskType", "taskUUID", "status", "resultIndex"}
    done = poll(fake_gateway, task["taskUUID"])
    assert [(i["resultIndex"], i["status"], i["text"]) for i in done] == [(0, "success", words), (1, "success", words)]
    assert done[1]["seed"] == done[0]["seed"] + 1


def test_sync_retry_of_an_async_task_waits_for_its_results(fake_gateway: AppGateway) -> None:
    task = text_task(model="slow", deliveryMethod="async", messages=[{"role": "user", "content": "a b c d"}])
    post(fake_gateway, [task])
    (item,) = post(fake_gateway, [{**task, "deliveryMethod": "sync"}]).json()["data"]
    assert item["text"] == "a b c d"
    assert len(billed(fake_gateway, task["taskUUID"], 1)) == 1


def test_async_failure_shows_as_an_error_item(fake_gateway: AppGateway) -> None:
    task = text_task(model="pricey", deliveryMethod="async")
    post(fake_gateway, [task])
    (item,) = poll(fake_gateway, task["taskUUID"])
    assert item["status"] == "error" and "text" not in item
    assert (item["error"]["code"], item["error"]["taskUUID"]) == ("insufficientCredits", task["taskUUID"])


def test_get_response_of_an_unknown_task(fake_gateway: AppGateway) -> None:
    unknown = new_uuid()
    response = post(fake_gateway, [{"taskType": "getResponse", "taskUUID": unknown}])
    assert response.status_code == 404
    (error,) = response.json()["errors"]
    assert (error["code"], error["taskType"], error["taskUUID"]) == ("taskNotFound", "getResponse", unknown)


# -- failures of the model or the account ---------------------------------------------------------


def test_insufficient_credits_is_402_and_unbilled(fake_gateway: AppGateway) -> None:
    task = text_task(model="pricey")
    response = post(fake_gateway, [task])
    assert response.status_code == 402
    (error,) = response.json()["errors"]
    assert (error["code"], error["taskUUID"], error["resultIndex"]) == ("insufficientCredits", task["taskUUID"], 0)
    assert charges_of(fake_gateway, task["taskUUID"]) == []


def test_some_results_fail_some_succeed(fake_gateway: AppGateway) -> None:
    ok, broken = text_task(), text_task(model="broken")
    response = post(fake_gateway, [ok, broken])
    assert response.status_code == 200
    assert [i["taskUUID"] for i in response.json()["data"]] == [ok["taskUUID"]]
    assert [e["taskUUID"] for e in response.json()["errors"]] == [broken["taskUUID"]]


def test_tool_calls_come_back_in_the_tools_shape(fake_gateway: AppGateway) -> None:
    task = text_task(tools=[WEATHER], toolChoice={"type": "any"}, includeUsage=True)
    (item,) = post(fake_gateway, [task]).json()["data"]
    assert item["finishReason"] == "tool_calls" and item["text"] == ""
    (call,) = item["tools"]
    assert call["name"] == "get_weather" and call["input"] == {"echo": "one two three"} and call["id"]
    # ... and go back into the conversation as an assistant message with its tool reply.
    follow_up = text_task(
        messages=[
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "tools": item["tools"]},
            {"role": "tool", "id": call["id"], "content": "sunny and warm"},
        ],
        tools=[WEATHER],
        toolChoice={"type": "none"},
    )
    (answer,) = post(fake_gateway, [follow_up]).json()["data"]
    assert answer["finishReason"] == "stop" and "tools" not in answer


# -- streaming ------------------------------------------------------------------------------------


def test_stream_frames(fake_gateway: AppGateway) -> None:
    task = text_task(deliveryMethod="stream", includeCost=True, includeUsage=True, seed=4)
    response = post(fake_gateway, [task])
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    frames = sse(response)
    head = {"taskType": "textInference", "taskUUID": task["taskUUID"], "resultIndex": 0}
    assert frames[:3] == [{**head, "delta": {"text": t}} for t in ("one", " two", " three")]
    last = frames[3]
    assert last == {
        **head,
        "delta": {},
        "finishReason": "stop",
        "seed": 4,
        "usage": last["usage"],
        "cost": last["cost"],
    }
    assert last["usage"]["completionTokens"] == 3 and last["cost"] > 0
    (stored,) = post(fake_gateway, [{"taskType": "getResponse", "taskUUID": task["taskUUID"]}]).json()["data"]
    assert stored["text"] == "one two three" and stored["cost"] == last["cost"]


def test_stream_of_several_results_one_after_the_other(fake_gateway: AppGateway) -> None:
    frames = sse(post(fake_gateway, [text_task(deliveryMethod="stream", numberResults=2, seed=1)]))
    assert [f["resultIndex"] for f in frames] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert [f.get("seed") for f in frames if "finishReason" in f] == [1, 2]


def test_stream_retry_replays_the_stored_result(fake_gateway: AppGateway) -> None:
    task = text_task(deliveryMethod="stream")
    first = sse(post(fake_gateway, [task]))
    replayed = sse(post(fake_gateway, [task]))
    assert "".join(f["delta"].get("text", "") for f in replayed) == "one two three"
    assert replayed[-1]["finishReason"] == first[-1]["finishReason"] == "stop"
    assert len(billed(fake_gateway, task["taskUUID"], 1)) == 1


def test_stream_error_before_the_first_frame_is_a_plain_error(fake_gateway: AppGateway) -> None:
    response = post(fake_gateway, [text_task(deliveryMethod="stream", model="pricey")])
    assert response.status_code == 402 and response.headers["content-type"] == "application/json"
    assert response.json()["errors"][0]["code"] == "insufficientCredits"


def test_stream_error_after_the_first_frame_is_an_error_frame(fake_gateway: AppGateway) -> None:
    task = text_task(deliveryMethod="stream", model="dies-midway")
    frames = sse(post(fake_gateway, [task]))
    assert [f["delta"]["text"] for f in frames[:2]] == ["one", " two"]
    (error,) = frames[2]["errors"]
    assert (error["code"], error["taskUUID"]) == ("providerError", task["taskUUID"])
    (item,) = post(fake_gateway, [{"taskType": "getResponse", "taskUUID": task["taskUUID"]}]).json()["data"]
    assert item["status"] == "error"
    assert [u["status"] for u in billed(fake_gateway, task["taskUUID"], 1)] == ["error"]
    assert charges_of(fake_gateway, task["taskUUID"]) == []  # a failed generation is not billed


def test_stream_must_be_alone_in_its_request(fake_gateway: AppGateway) -> None:
    response = post(fake_gateway, [text_task(deliveryMethod="stream"), {"taskType": "ping", "ping": True}])
    assert response.status_code == 200
    (error,) = response.json()["errors"]
    assert (error["code"], error["parameter"]) == ("invalidDeliveryMethod", "deliveryMethod")


def test_stream_after_authentication_task(fake_gateway: AppGateway) -> None:
    auth = {"taskType": "authentication", "apiKey": fake_gateway.api_key}
    frames = sse(post(fake_gateway, [auth, text_task(deliveryMethod="stream")], key=None))
    assert "".join(f["delta"].get("text", "") for f in frames) == "one two three"
