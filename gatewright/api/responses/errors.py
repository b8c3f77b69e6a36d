"""Errors in OpenAI's format (the Responses API shares Chat Completions' error object); the core's
parameter names are the Chat Completions ones, so they are renamed to this dialect's fields."""

from __future__ import annotations

from typing import Any

from gatewright.api.openai.errors import error_body as openai_error_body
from gatewright.core.errors import GatewrightError

# Core parameter names (as in Chat Completions) → the Responses API's.
PARAMS: dict[str, str] = {
    "messages": "input",
    "max_tokens": "max_output_tokens",
    "response_format": "text.format",
    "logprobs": "include",
    "thinking": "reasoning",
}


def param_of(param: str | None) -> str | None:
    if param is None:
        return None
    head, sep, rest = param.partition(".")
    bracket = head.find("[")
    name = head if bracket < 0 else head[:bracket]
    renamed = PARAMS.get(name)
    if renamed is None:
        return param
    if name == "messages":
        return "input"  # message indexes do not match item indexes (instructions, merged items)
    return renamed + head[len(name) :] + sep + rest


def error_body(error: GatewrightError) -> dict[str, Any]:
    body = openai_error_body(error)
    body["error"]["param"] = param_of(error.param)
    return body
