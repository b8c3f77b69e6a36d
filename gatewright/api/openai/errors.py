"""Core errors → OpenAI's error object ``{"error": {message, type, param, code}}``."""

from __future__ import annotations

from typing import Any

from gatewright.api.public import public_message
from gatewright.core import errors as e

# (type, default code), looked up along the exception's MRO; the status comes from the error.
ERROR_TYPES: dict[type[e.GatewrightError], tuple[str, str | None]] = {
    e.InvalidRequest: ("invalid_request_error", None),
    e.ContextWindowExceeded: ("invalid_request_error", "context_length_exceeded"),
    e.Unauthorized: ("invalid_request_error", "invalid_api_key"),
    e.InsufficientCredits: ("insufficient_quota", "insufficient_quota"),
    e.PermissionDenied: ("permission_error", None),
    e.NotFound: ("invalid_request_error", "not_found"),
    e.ModelNotFound: ("invalid_request_error", "model_not_found"),
    e.Conflict: ("invalid_request_error", "conflict"),
    e.PayloadTooLarge: ("invalid_request_error", "request_too_large"),
    e.RateLimited: ("rate_limit_error", "rate_limit_exceeded"),
    e.ServerError: ("server_error", None),
    e.Overloaded: ("server_error", "overloaded"),
    e.UpstreamError: ("upstream_error", None),
    e.UpstreamTimeout: ("upstream_error", "upstream_timeout"),
}


def lookup(error: e.GatewrightError) -> tuple[str, str | None]:
    for cls in type(error).__mro__:
        row = ERROR_TYPES.get(cls)  # type: ignore[arg-type]
        if row is not None:
            return row
    return ("server_error", None)


def error_body(error: e.GatewrightError) -> dict[str, Any]:
    kind, code = lookup(error)
    return {"error": {"message": public_message(error), "type": kind, "param": error.param, "code": error.code or code}}
