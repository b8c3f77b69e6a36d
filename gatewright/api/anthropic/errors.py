"""Core errors → Anthropic's error object ``{"type": "error", "error": {type, message}, "request_id"}``.

Anthropic ties each error type to one status (https://docs.claude.com/en/api/errors), so the status
comes from this table, not from the core error: a local engine that is full answers 529
``overloaded_error`` here and 503 in the OpenAI dialect. An upstream failure is refined by what the
upstream answered (its 529 stays an overload, its 429 a rate limit).
"""

from __future__ import annotations

from typing import Any

from gatewright.api.public import public_message
from gatewright.core import errors as e

ErrorRow = tuple[str, int]  # (error.type, HTTP status)

# Looked up along the exception's MRO, so a new subclass renders like its parent.
ERROR_TYPES: dict[type[e.GatewrightError], ErrorRow] = {
    e.InvalidRequest: ("invalid_request_error", 400),
    e.Unauthorized: ("authentication_error", 401),
    e.InsufficientCredits: ("billing_error", 402),
    e.PermissionDenied: ("permission_error", 403),
    e.NotFound: ("not_found_error", 404),
    e.Conflict: ("conflict_error", 409),
    e.PayloadTooLarge: ("request_too_large", 413),
    e.RateLimited: ("rate_limit_error", 429),
    e.ServerError: ("api_error", 500),
    e.Overloaded: ("overloaded_error", 529),
    e.UpstreamError: ("api_error", 500),
    e.UpstreamTimeout: ("timeout_error", 504),
    # No deployment could be reached: to a caller, capacity is missing for now, so retry later.
    e.UpstreamUnavailable: ("overloaded_error", 529),
}

# What an upstream answered → what our caller sees, for plain ``UpstreamError``s.
UPSTREAM_STATUS: dict[int, ErrorRow] = {
    429: ("rate_limit_error", 429),
    503: ("overloaded_error", 529),
    529: ("overloaded_error", 529),
    408: ("timeout_error", 504),
    504: ("timeout_error", 504),
}

FALLBACK: ErrorRow = ("api_error", 500)


def lookup(error: e.GatewrightError) -> ErrorRow:
    for cls in type(error).__mro__:
        row = ERROR_TYPES.get(cls)  # type: ignore[arg-type]
        if row is None:
            continue
        if cls is e.UpstreamError:
            return UPSTREAM_STATUS.get(error.upstream_status, row)  # type: ignore[attr-defined]
        return row
    return FALLBACK


def error_body(error: e.GatewrightError, request_id: str) -> dict[str, Any]:
    kind, _ = lookup(error)
    return {"type": "error", "error": {"type": kind, "message": public_message(error)}, "request_id": request_id}
