"""``POST /v1`` and ``POST /v1/tasks``: a JSON array of tasks in, ``{"data"}`` and/or ``{"errors"}`` out.

HTTP status: 200 when any task produced data (errors of the other tasks ride along in ``errors``);
otherwise the errors' own status (``responses.errors_response``): 400 validation, 401 no or unknown
key, 402 credits, 403 key disabled, 404 unknown model or task, 409 taskUUID conflict, 429 rate
limit, 5xx server or provider. A successful answer has no ``errors`` key at all.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from gatewright.api.deps import authenticate, gateway
from gatewright.api.http import JSONResponse, bearer
from gatewright.api.openapi import Operation, routes_of
from gatewright.api.tasks import schemas as w
from gatewright.api.tasks.errors import from_validation, invalid
from gatewright.api.tasks.handlers import HANDLERS, Batch, error_for
from gatewright.api.tasks.responses import errors_response, single_error
from gatewright.api.tasks.stream import open_stream
from gatewright.api.wire import read_json
from gatewright.core.errors import GatewrightError, InternalError
from gatewright.core.jobs import Jobs
from gatewright.core.platform import Principal

log = logging.getLogger("gatewright.tasks")

MAX_TASKS = w.MAX_TASKS


def parse_body(body: bytes) -> list[Any]:
    try:
        tasks = read_json(body)
    except GatewrightError as error:
        raise invalid("invalidRequestBody", error.message) from None
    if not isinstance(tasks, list):
        raise invalid("invalidRequestBody", "The body must be a JSON array of task objects, even for one task.")
    if not tasks:
        raise invalid("missingTasks", "The array holds no task.")
    if len(tasks) > MAX_TASKS:
        raise invalid("invalidRequestBody", f"At most {MAX_TASKS} tasks fit in one request; got {len(tasks)}.")
    return tasks


def _is_auth(task: Any) -> bool:
    return isinstance(task, dict) and task.get("taskType") == "authentication"


def _reserves(tasks: list[Any]) -> bool:
    """Every task is an inference, whose credit reservation refuses a disabled key itself."""
    return all(isinstance(task, dict) and task.get("taskType") == "textInference" for task in tasks)


async def _authenticate(request: Request, tasks: list[Any]) -> tuple[Principal | None, list[Any]]:
    """The caller: an authentication task first in the array, else ``Authorization: Bearer``.
    Fresh (a store read, ``api.deps.authenticate``) unless every task reserves credits."""
    if not _is_auth(tasks[0]):
        return await authenticate(request, bearer(request), not _reserves(tasks)), tasks
    try:
        auth = w.AuthenticationTask.model_validate(tasks[0])
    except ValidationError as error:
        raise from_validation(error) from None
    return await authenticate(request, auth.apiKey, not _reserves(tasks[1:])), tasks[1:]


def _duplicates(tasks: list[Any]) -> set[int]:
    """Positions of textInference tasks whose taskUUID an earlier task of the array already has."""
    seen: set[str] = set()
    repeated: set[int] = set()
    for i, task in enumerate(tasks):
        if isinstance(task, dict) and task.get("taskType") == "textInference" and isinstance(task.get("taskUUID"), str):
            key = task["taskUUID"].lower()
            if key in seen:
                repeated.add(i)
            seen.add(key)
    return repeated


async def _run_one(batch: Batch, task: Any, duplicate: bool) -> None:
    try:
        if not isinstance(task, dict):
            raise invalid("invalidTask", "Each element of the array must be a task object.")
        task_type = task.get("taskType")
        if not isinstance(task_type, str):
            raise invalid("missingTaskType", "Missing required parameter 'taskType'.", "taskType")
        handler = HANDLERS.get(task_type)
        if handler is None:
            raise invalid(
                "unsupportedTaskType",
                f"taskType '{task_type}' is not supported; this gateway runs {', '.join(sorted(HANDLERS))}.",
                "taskType",
            )
        if duplicate:
            raise invalid("duplicateTaskUUID", "Another task of this request has the same taskUUID.", "taskUUID")
        await handler(batch, task)
    except GatewrightError as error:
        batch.errors.append((error.status, error_for(task, error)))
        batch.retry_after = getattr(error, "retry_after", None)
    except Exception as error:  # a bug or a store outage, never the caller's input
        log.exception("task failed")
        batch.errors.append((500, error_for(task, InternalError(f"task failed: {error!r}"))))  # shown generically


def render_error(error: GatewrightError, request_id: str) -> Response:
    """This dialect's answer to an error the front door caught (``api.front.ErrorFormats``)."""
    return single_error(error)


def _is_stream(tasks: list[Any]) -> bool:
    only = tasks[0] if len(tasks) == 1 else None
    return isinstance(only, dict) and only.get("taskType") == "textInference" and only.get("deliveryMethod") == "stream"


async def run_tasks(request: Request) -> Response:
    try:
        tasks = parse_body(await request.body())
    except GatewrightError as error:
        return single_error(error)
    try:
        principal, tasks = await _authenticate(request, tasks)
    except GatewrightError as error:
        via_task = _is_auth(tasks[0])
        return single_error(error, "authentication" if via_task else None, "apiKey" if via_task else None)
    jobs: Jobs = request.app.state.jobs
    if tasks and _is_stream(tasks):
        return await open_stream(gateway(request), jobs, principal, tasks[0])
    # Tasks run concurrently, each into its own part, joined in the order they were sent.
    parts = [Batch(gateway(request), jobs, principal) for _ in tasks]
    repeated = _duplicates(tasks)
    await asyncio.gather(*(_run_one(parts[i], task, i in repeated) for i, task in enumerate(tasks)))
    data = [item for part in parts for item in part.data]
    errors = [error for part in parts for error in part.errors]
    if data or not errors:
        body: dict[str, Any] = {"data": data}
        if errors:
            body["errors"] = [error for _, error in errors]
        return JSONResponse(body)
    return errors_response(errors, next((p.retry_after for p in parts if p.retry_after is not None), None))


operations = [
    Operation(
        "POST",
        "/v1/tasks",
        run_tasks,
        "Run tasks (the task API): a JSON array of task objects.",
        "tasks",
        body=w.TaskArray,
        aliases=("/v1",),
        example=[
            {
                "taskType": "textInference",
                "taskUUID": "a770f077-f413-47de-9dac-be0b26a35da6",
                "model": "local",
                "messages": [{"role": "user", "content": "Say hello"}],
                "settings": {"maxTokens": 16},
            }
        ],
    ),
]
routes = routes_of(operations)
