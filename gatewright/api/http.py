"""Small HTTP helpers shared by the dialects: JSON responses, bodies, request ids, headers."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from gatewright.api.wire import read_json
from gatewright.core.errors import InvalidRequest
from gatewright.core.ids import request_id as new_request_id
from gatewright.core.platform import LimitState

log = logging.getLogger("gatewright.access")

M = TypeVar("M", bound=BaseModel)

# Names pydantic puts into error locations that are not fields: union members and tags.
_NOT_FIELDS = frozenset(
    {
        "str",
        "int",
        "float",
        "bool",
        "none",
        "system",
        "developer",
        "user",
        "assistant",
        "tool",
        "text",
        "image_url",
        "input_audio",
        "file",
        "refusal",
        "json_object",
        "json_schema",
        "image",
        "tool_use",
        "tool_result",
        "thinking",
        "redacted_thinking",
        "document",
        "enabled",
        "disabled",
        "auto",
        "any",
        "search",
        "codeInterpreter",
        "base64",
        "url",
        "adaptive",
    }
)


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _is_field(loc: tuple[int | str, ...], at: int) -> bool:
    part = loc[at]
    if at == 0 or loc[at - 1] == part:
        # A body's top-level key is always a field; so is a name right after the same name used
        # as a union tag (``{"type": "text", "text": …}`` → ``…, 'text', 'text'``).
        return True
    return not (part in _NOT_FIELDS or "[" in str(part) or "-" in str(part))


def shorten(param: str | None, limit: int = 100) -> str | None:
    """A parameter path as it goes back into a message: a caller's own key can be megabytes long."""
    return param if param is None or len(param) <= limit else param[:limit] + "…"


def param_of(loc: tuple[int | str, ...]) -> str | None:
    out = ""
    for at, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif not _is_field(loc, at):
            continue
        else:
            out += f".{part}" if out else part
    return out or None


def shown_value(value: Any, limit: int = 80) -> str | None:
    """A scalar the caller sent, as it goes back into an error message; None for anything else."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return orjson.dumps(value).decode()[:limit]
    if isinstance(value, (int, float)):
        text = str(value)  # not orjson: an integer can be any size here
        return text if len(text) <= limit else text[:limit] + "…"
    return None


def invalid_from(error: ValidationError) -> InvalidRequest:
    first = error.errors(include_url=False)[0]
    kind = first["type"]
    if kind == "json_invalid":
        return InvalidRequest(
            "We could not parse the JSON body of your request: " + str(first.get("ctx", {}).get("error", "")),
            code="invalid_json",
        )
    loc = tuple(first["loc"])
    if kind == "model_type" and not loc:
        return InvalidRequest("The request body must be a JSON object.", code="invalid_body")
    param = shorten(param_of(loc))
    message = first["msg"]
    if kind == "missing":
        return InvalidRequest(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
    if kind == "extra_forbidden":
        return InvalidRequest(f"Unrecognized request argument supplied: '{param}'.", param=param)
    shown = shown_value(first.get("input"))
    suffix = f" (got {shown})" if shown is not None else ""
    return InvalidRequest(f"Invalid '{param}': {message}{suffix}.", param=param, code="invalid_value")


def parse(model: type[M], body: bytes) -> M:
    """The body as ``model``: read by ``wire.read_json`` (duplicate keys, NaN, depth), then
    validated strictly."""
    return validate(model, read_json(body))


def validate(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise invalid_from(error) from None


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def request_id(request: Request) -> str:
    return request.scope.get("gatewright.request_id") or new_request_id()


def reset_text(seconds: float) -> str:
    """A reset as Go-duration text, as OpenAI sends it ("20ms", "8.64s", "6m0s"): what clients parse
    with Go's ``time.ParseDuration`` or its ports, so never exponent notation ("6e-05s")."""
    if seconds >= 60:
        minutes, rest = divmod(int(seconds), 60)
        return f"{minutes}m{rest}s"
    if seconds >= 1:
        return f"{seconds:.3g}s"  # below 60: at most two digits before the point, so no exponent
    if seconds <= 0:
        return "0s"
    return f"{max(1, round(seconds * 1000))}ms"  # under a millisecond reads as one


def limit_headers(state: LimitState | None) -> dict[str, str]:
    if state is None:
        return {}
    headers: dict[str, str] = {}
    if state.requests_limit is not None:
        headers["x-ratelimit-limit-requests"] = str(state.requests_limit)
        headers["x-ratelimit-remaining-requests"] = str(state.requests_remaining)
        headers["x-ratelimit-reset-requests"] = reset_text(state.requests_reset)
    if state.tokens_limit is not None:
        headers["x-ratelimit-limit-tokens"] = str(state.tokens_limit)
        headers["x-ratelimit-remaining-tokens"] = str(state.tokens_remaining)
        headers["x-ratelimit-reset-tokens"] = reset_text(state.tokens_reset)
    return headers


def merge_headers(*parts: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in parts:
        out.update(part)
    return out
