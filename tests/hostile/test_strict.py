"""Types are strict at every depth, as OpenAI's and Anthropic's own APIs are: a string where a
number or a boolean is expected is a 400 naming the field, never coerced (and billed). Numbers are
bounded, JSON is read strictly (duplicate keys, NaN, invalid UTF-8, deep nesting), on every route."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from tests.hostile.conftest import InProcess
from tests.hostile.wire import assert_no_leak, error_of

CHAT = {"model": "local", "messages": [{"role": "user", "content": "one two"}]}
MESSAGES = {**CHAT, "max_tokens": 8}
TASK = {
    "taskType": "textInference",
    "taskUUID": "a770f077-f413-47de-9dac-be0b26a35da6",
    "model": "local",
    "messages": [{"role": "user", "content": "one two"}],
}
FUNCTION = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
HUGE = 10**30

# (path, dialect, body, the field the error must name)
WRONG_TYPES: list[tuple[str, str, Any, str]] = [
    ("/v1/chat/completions", "openai", {**CHAT, "stream": "yes"}, "stream"),
    ("/v1/chat/completions", "openai", {**CHAT, "max_tokens": "16"}, "max_tokens"),
    ("/v1/chat/completions", "openai", {**CHAT, "temperature": "0.5"}, "temperature"),
    ("/v1/chat/completions", "openai", {**CHAT, "n": True}, "n"),
    ("/v1/chat/completions", "openai", {**CHAT, "max_tokens": 16.0}, "max_tokens"),
    ("/v1/chat/completions", "openai", {**CHAT, "max_tokens": HUGE}, "max_tokens"),
    ("/v1/chat/completions", "openai", {**CHAT, "top_k": HUGE}, "top_k"),
    (
        "/v1/chat/completions",
        "openai",
        {**CHAT, "stream_options": {"include_usage": "true"}},
        "stream_options.include_usage",
    ),
    ("/v1/chat/completions", "openai", {**CHAT, "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    (
        "/v1/chat/completions",
        "openai",
        {**CHAT, "tools": [{**FUNCTION, "function": {"name": "f", "parameters": {"maximum": HUGE}}}]},
        "tools[0].function.parameters",
    ),
    ("/v1/messages", "anthropic", {**MESSAGES, "stream": "yes"}, "stream"),
    ("/v1/messages", "anthropic", {**MESSAGES, "max_tokens": "16"}, "max_tokens"),
    ("/v1/messages", "anthropic", {**MESSAGES, "temperature": "0.5"}, "temperature"),
    ("/v1/messages", "anthropic", {**MESSAGES, "max_tokens": HUGE}, "max_tokens"),
    ("/v1/messages", "anthropic", {**MESSAGES, "top_k": HUGE}, "top_k"),
    (
        "/v1/messages",
        "anthropic",
        {**MESSAGES, "tools": [{"name": "f", "input_schema": {"type": "object", "x": -HUGE}}]},
        "tools[0].input_schema",
    ),
    ("/v1/messages/count_tokens", "anthropic", {**CHAT, "system": 7}, "system"),
    ("/v1/tasks", "tasks", [{**TASK, "settings": {"maxTokens": "16"}}], "settings.maxTokens"),
    ("/v1/tasks", "tasks", [{**TASK, "includeCost": "yes"}], "includeCost"),
    ("/v1/tasks", "tasks", [{**TASK, "settings": {"temperature": "0.5"}}], "settings.temperature"),
    ("/v1/tasks", "tasks", [{**TASK, "settings": {"topK": HUGE}}], "settings.topK"),
    (
        "/v1/tasks",
        "tasks",
        [{**TASK, "tools": [{"type": "function", "name": "f", "schema": {"x": HUGE}}]}],
        "tools[0].schema",
    ),
    ("/v1/admin/accounts/1/credits", "openai", {"credits": "5"}, "credits"),
    ("/v1/admin/accounts/1/credits", "openai", {"usd": "5"}, "usd"),
    ("/v1/keys", "openai", {"limit": {"threshold": "5"}}, "limit.threshold"),
    ("/v1/keys", "openai", {"rate_limit": {"requests_per_minute": 6.0}}, "rate_limit.requests_per_minute"),
]


def _post(gw: InProcess, path: str, body: bytes) -> Any:
    security = ("managementKey",) if path.startswith(("/v1/keys", "/v1/billing")) else ("apiKey",)
    security = ("operatorKey",) if path.startswith("/v1/admin") else security
    return gw.client.post(path, content=body, headers={**gw.headers(security), "content-type": "application/json"})


@pytest.mark.parametrize(("path", "dialect", "body", "field"), WRONG_TYPES)
def test_wrong_type_is_a_400_naming_the_field(gw: InProcess, path: str, dialect: str, body: Any, field: str) -> None:
    response = _post(gw, path, json.dumps(body).encode())  # json: orjson refuses huge integers
    assert response.status_code == 400, response.text
    error = error_of(dialect, response)
    if error["param"] is not None or dialect != "anthropic":
        assert error["param"] == field, error
    assert field in error["message"], error
    assert_no_leak(response)


def test_an_integer_is_a_number(gw: InProcess) -> None:
    """OpenAI accepts ``temperature: 1``: JSON does not tell 1 from 1.0, so neither do we."""
    assert _post(gw, "/v1/chat/completions", orjson.dumps({**CHAT, "temperature": 1})).status_code == 200
    assert _post(gw, "/v1/messages", orjson.dumps({**MESSAGES, "temperature": 1})).status_code == 200


BAD_JSON: list[tuple[str, bytes]] = [
    ("duplicate key", b'{"model": "local", "model": "other", "messages": []}'),
    ("nested duplicate key", b'{"model": "local", "messages": [{"role": "user", "role": "user", "content": "x"}]}'),
    ("NaN", b'{"model": "local", "temperature": NaN, "messages": []}'),
    ("Infinity", b'{"model": "local", "temperature": -Infinity, "messages": []}'),
    ("invalid UTF-8", b'{"model": "local\xff\xfe", "messages": []}'),
    ("lone surrogate", b'{"model": "local", "messages": [{"role": "user", "content": "\\ud800"}]}'),
    ("deep nesting", b'{"model": "local", "metadata": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    ("huge integer", b'{"model": "local", "seed": ' + b"9" * 5000 + b"}"),
    ("not an object", b"[1, 2, 3]"),
    ("empty", b""),
]

ROUTES = [
    ("/v1/chat/completions", "openai"),
    ("/v1/messages", "anthropic"),
    ("/v1/messages/count_tokens", "anthropic"),
    ("/v1/tasks", "tasks"),
    ("/v1/keys", "openai"),
    ("/v1/admin/accounts/1/credits", "openai"),
]


@pytest.mark.parametrize(("path", "dialect"), ROUTES)
@pytest.mark.parametrize(("name", "body"), BAD_JSON, ids=[name for name, _ in BAD_JSON])
def test_malformed_json_is_a_400(gw: InProcess, path: str, dialect: str, name: str, body: bytes) -> None:
    response = _post(gw, path, body)
    if name == "empty" and path in ("/v1/keys", "/v1/admin/accounts/1/credits"):
        return  # an empty body is an empty object there: every field is optional
    assert response.status_code == 400, (name, response.text)
    error_of(dialect, response)
    assert_no_leak(response)
