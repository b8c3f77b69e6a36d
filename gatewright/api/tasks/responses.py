"""Error answers of the task API: ``{"errors": [...]}`` with one HTTP status for the request.

The status is the errors' own when they agree (400, 401, 402, 403, 404, 409, 429); the highest
when any is a server error; 400 when client errors of different kinds are mixed.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from gatewright.api.http import JSONResponse
from gatewright.api.tasks.errors import error_object
from gatewright.core.errors import GatewrightError


def errors_response(errors: list[tuple[int, dict[str, Any]]], retry_after: float | None = None) -> Response:
    statuses = [status for status, _ in errors]
    server_error = any(s >= 500 for s in statuses)
    status = max(statuses) if server_error else (statuses[0] if len(set(statuses)) == 1 else 400)
    headers = {"retry-after": str(max(1, round(retry_after)))} if retry_after is not None and status == 429 else None
    return JSONResponse({"errors": [body for _, body in errors]}, status_code=status, headers=headers)


def single_error(error: GatewrightError, task_type: str | None = None, param: str | None = None) -> Response:
    body = error_object(error, task_type, None)
    if param is not None:
        body["parameter"] = param
    return errors_response([(error.status, body)], getattr(error, "retry_after", None))
