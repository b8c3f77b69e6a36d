"""Core errors → the task API's error object ``{code, message, parameter, taskType, taskUUID}``.

Codes follow the families the official SDK classifies by name (``runware/errors.py derive_code``):
``invalid*`` / ``missing*`` / ``unsupported*`` / ``conflict*`` / ``duplicate*`` / ``unknownParameter``
are validation errors, ``*ApiKey*`` authentication, ``*Credits*`` / ``*Quota*`` quota,
``rateLimitExceeded`` rate limits, ``unknownModel`` / ``*NotFound`` not found. The HTTP status is
the core error's own (400, 401, 402, 403, 404, 409, 429, 5xx).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from gatewright.api.http import param_of, shorten, shown_value
from gatewright.api.public import public_message
from gatewright.api.tasks.schemas import TOOL_NAME, UUID_V4
from gatewright.core import errors as e

# Core codes that have a name of their own in this dialect.
CODES: dict[str, str] = {
    "missing_api_key": "missingApiKey",
    "invalid_api_key": "invalidApiKey",
    "key_disabled": "apiKeyDisabled",
    "api_key_required": "invalidApiKeyKind",
    "management_key_required": "invalidApiKeyKind",
    "missing_scope": "permissionDenied",
    "insufficient_credits": "insufficientCredits",
    "key_limit_exceeded": "keySpendQuotaExceeded",
    "account_missing": "insufficientCredits",
    "model_not_found": "unknownModel",
    "model_inactive": "unsupportedModel",
    "engine_queue_full": "serviceUnavailable",
    "upstream_rate_limited": "providerRateLimitExceeded",
    "invalid_webhook_url": "invalidWebhookURL",
}

# Otherwise by class, along the MRO. ``None``: a validation code made from the parameter.
CLASS_CODES: dict[type[e.GatewrightError], str | None] = {
    e.InvalidRequest: None,
    e.UnsupportedFeature: None,
    e.Unauthorized: "invalidApiKey",
    e.InsufficientCredits: "insufficientCredits",
    e.PermissionDenied: "permissionDenied",
    e.NotFound: "taskNotFound",
    e.ModelNotFound: "unknownModel",
    e.Conflict: "conflictTaskUUID",
    e.PayloadTooLarge: "payloadTooLarge",
    e.RateLimited: "rateLimitExceeded",
    e.ServerError: "internalServerError",
    e.Overloaded: "serviceUnavailable",
    e.UpstreamError: "providerError",
    e.UpstreamTimeout: "timeoutProvider",
    e.UpstreamUnavailable: "noAvailableServer",
}

# Readable words for the schema's regular expressions.
PATTERNS: dict[str, str] = {
    UUID_V4: "must be a UUID v4 such as 'a770f077-f413-47de-9dac-be0b26a35da6'",
    TOOL_NAME: "must be 1 to 64 letters, digits, '_' or '-'",
}

# Parameters the core names in OpenAI's terms → this dialect's names.
PARAMS: dict[str, str] = {
    "max_tokens": "settings.maxTokens",
    "stop": "settings.stopSequences",
    "temperature": "settings.temperature",
    "top_p": "settings.topP",
    "thinking": "settings.thinkingLevel",
    "reasoning": "settings.thinkingLevel",
    "tool_choice": "toolChoice",
    "n": "numberResults",
}

# Generic last names get their parent's name in front: ``toolChoice.type`` → ``ToolChoiceType``.
_GENERIC = frozenset({"type", "name", "id", "content", "input", "schema", "description", "role"})
_SINGULAR = {"messages": "Message", "tools": "Tool", "stopSequences": "StopSequence"}


def _pascal(word: str) -> str:
    return word[:1].upper() + word[1:]


def code_for(prefix: str, param: str | None) -> str:
    """``invalid`` + ``settings.maxTokens`` → ``invalidMaxTokens``; ``messages[0].role`` → ``invalidMessageRole``."""
    if not param:
        return prefix + "Request"
    names = [n for n in re.split(r"[.\[\]]", param) if n and not n.isdigit()]
    if not names:
        return prefix + "Request"
    if names[-1] in _GENERIC and len(names) > 1:
        return prefix + (_SINGULAR.get(names[-2]) or _pascal(names[-2])) + _pascal(names[-1])
    return prefix + _pascal(names[-1])


def _lookup(error: e.GatewrightError) -> str | None:
    for cls in type(error).__mro__:
        if cls in CLASS_CODES:
            return CLASS_CODES[cls]
    return "internalServerError"


def wire_param(error: e.GatewrightError) -> str | None:
    if error.param is None:
        return None
    return PARAMS.get(error.param, error.param)


def wire_code(error: e.GatewrightError) -> str:
    code = error.code
    if code and "_" not in code and code != code.lower():
        return code  # camelCase: already a task-API code (core codes are snake_case)
    if code in CODES:
        return CODES[code]
    by_class = _lookup(error)
    if by_class is not None:
        return by_class
    prefix = "unsupported" if isinstance(error, e.UnsupportedFeature) else "invalid"
    return code_for(prefix, wire_param(error))


def error_object(
    error: e.GatewrightError, task_type: str | None, task_uuid: str | None, result_index: int | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "code": wire_code(error),
        "message": public_message(error),
        "parameter": wire_param(error),
        "taskType": task_type,
        "taskUUID": task_uuid,
    }
    if result_index is not None:
        body["resultIndex"] = result_index
    return body


def invalid(code: str, message: str, param: str | None = None) -> e.InvalidRequest:
    """A validation error raised by this dialect, with its wire code already chosen."""
    return e.InvalidRequest(message, param=param, code=code)


def from_validation(error: ValidationError) -> e.InvalidRequest:
    """The first pydantic error as a task error: ``missing…``, ``unknownParameter`` or ``invalid…``."""
    first = error.errors(include_url=False)[0]
    kind = first["type"]
    loc = tuple(first["loc"])
    param = shorten(param_of(loc))
    if kind in ("missing", "union_tag_not_found"):
        if kind == "union_tag_not_found":
            param = f"{param}.role" if param else "role"
        return invalid(code_for("missing", param), f"Missing required parameter '{param}'.", param)
    if kind == "extra_forbidden":
        return invalid(
            "unknownParameter", f"Unknown parameter '{param}': gatewright's task API does not accept it.", param
        )
    shown = shown_value(first.get("input"))
    suffix = f" (got {shown})" if shown is not None else ""
    message = str(first["msg"]).removeprefix("Value error, ")
    if kind == "string_pattern_mismatch":
        message = PATTERNS.get(str(first.get("ctx", {}).get("pattern")), message)
    return invalid(code_for("invalid", param), f"Invalid '{param}': {message}{suffix}.", param)


# HTTP status of a stored error, known only by its code (results read back from the store).
STATUS_BY_CODE: dict[str, int] = {
    "missingApiKey": 401,
    "invalidApiKey": 401,
    "apiKeyDisabled": 403,
    "invalidApiKeyKind": 403,
    "permissionDenied": 403,
    "insufficientCredits": 402,
    "keySpendQuotaExceeded": 402,
    "unknownModel": 404,
    "taskNotFound": 404,
    "payloadTooLarge": 413,
    "rateLimitExceeded": 429,
    "internalServerError": 500,
    "providerError": 502,
    "providerRateLimitExceeded": 502,
    "serviceUnavailable": 503,
    "noAvailableServer": 503,
    "timeoutProvider": 504,
}


def status_for(code: str) -> int:
    if code in STATUS_BY_CODE:
        return STATUS_BY_CODE[code]
    return 409 if code.startswith("conflict") else 400
