"""SSE for ``deliveryMethod: "stream"`` (conformance.md §1.7).

Each frame is ``data: {json}``: ``{"taskType", "taskUUID", "resultIndex", "delta": {"text": …}}`` or
``{… "delta": {"reasoningContent": …}}`` while generating; then one closing frame per result with an
empty ``delta``, ``finishReason``, ``seed``, tool calls as ``tools`` and, when the task asked for
them, ``usage`` and ``cost``. A failure after the first frame is ``{"errors": [error]}``; the stream
ends with ``data: [DONE]``. Results of a task with ``numberResults > 1`` follow each other, told
apart by ``resultIndex``. Errors before the first frame are a plain ``{"errors"}`` response.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from starlette.responses import Response, StreamingResponse

from gatewright.api.sse import DONE, data_frame
from gatewright.api.tasks.codec import conflict, render, spec_of
from gatewright.api.tasks.responses import errors_response, single_error
from gatewright.api.tasks.translate import TASK_TYPE, Item
from gatewright.core.errors import ClientError, Conflict, GatewrightError
from gatewright.core.events import Event, ReasoningDelta, TextDelta
from gatewright.core.jobs import JobConflict, Jobs, Outcome, StreamItem, TaskSpec
from gatewright.core.pipeline import Gateway
from gatewright.core.platform import Principal

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}

# Item keys the closing frame of a result carries.
CLOSING_KEYS = ("finishReason", "seed", "tools", "usage", "cost")


class StreamAborted(ClientError):
    """The client closed the stream before the result was finished (tokens produced are billed)."""


def _head(task_uuid: str, index: int) -> dict[str, Any]:
    return {"taskType": TASK_TYPE, "taskUUID": task_uuid, "resultIndex": index}


def delta_frame(task_uuid: str, index: int, key: str, text: str) -> bytes:
    return data_frame({**_head(task_uuid, index), "delta": {key: text}})


def error_frame(error: dict[str, Any]) -> bytes:
    return data_frame({"errors": [error]})


def closing_frame(item: Item) -> bytes:
    frame = {**_head(item["taskUUID"], item["resultIndex"]), "delta": {}}
    frame.update({k: item[k] for k in CLOSING_KEYS if k in item})
    return data_frame(frame)


def event_frame(task_uuid: str, index: int, event: Event) -> bytes | None:
    """The frame of one event of a result being generated (most events show only in its end)."""
    match event:
        case TextDelta(text=text) if text:
            return delta_frame(task_uuid, index, "text", text)
        case ReasoningDelta(text=text) if text:
            return delta_frame(task_uuid, index, "reasoningContent", text)
    return None


def outcome_frame(spec: TaskSpec, outcome: Outcome) -> bytes:
    item = render(spec, outcome)
    return error_frame(item["error"]) if outcome.error is not None else closing_frame(item)


def replay(items: list[Item]) -> list[bytes]:
    """Frames for results that already finished (an identical retry of a streamed task)."""
    frames: list[bytes] = []
    for item in items:
        if item.get("status") != "success":
            frames.append(error_frame(item["error"]))
            continue
        uuid, index = item["taskUUID"], item["resultIndex"]
        for key in ("reasoningContent", "text"):
            if item.get(key):
                frames.append(delta_frame(uuid, index, key, item[key]))
        frames.append(closing_frame(item))
    return frames


async def _replayed(items: list[Item]) -> AsyncIterator[bytes]:
    for frame in replay(items):
        yield frame
    yield DONE


async def _frames(spec: TaskSpec, items: AsyncGenerator[StreamItem, None]) -> AsyncIterator[bytes]:
    try:
        async for index, item in items:
            frame = outcome_frame(spec, item) if isinstance(item, Outcome) else event_frame(spec.uuid, index, item)
            if frame is not None:
                yield frame
        yield DONE
    finally:
        await items.aclose()  # the run's own cleanup (results left unfinished, release) runs now


async def open_stream(gateway: Gateway, jobs: Jobs, principal: Principal | None, raw: dict[str, Any]) -> Response:
    try:
        spec = spec_of(raw)
        gateway.catalog.resolve(spec.wire.model)
        run = await jobs.stream(
            spec, principal, StreamAborted("The client closed the stream first.", code="streamAborted")
        )
    except JobConflict:
        return single_error(conflict(spec), TASK_TYPE)
    except GatewrightError as error:
        return single_error(error, TASK_TYPE)
    job = run.job
    if not run.started:
        if job.finished and job.status == "success":
            done = [render(job.spec, outcome) for outcome in job.outcomes if outcome is not None]
            return StreamingResponse(_replayed(done), media_type="text/event-stream", headers=SSE_HEADERS)
        running = Conflict(
            f"The task {spec.uuid} is already running; poll it with getResponse.",
            param="taskUUID",
            code="conflictTaskRunning",
        )
        return single_error(running, TASK_TYPE)
    if run.refused is not None and run.refused.error is not None:  # before any byte, and nothing else to come
        refusal = run.refused.error
        item = render(job.spec, run.refused)
        return errors_response([(refusal.status, item["error"])], getattr(refusal, "retry_after", None))
    headers = dict(SSE_HEADERS)
    if run.deployment is not None:
        headers["x-gatewright-deployment"] = run.deployment
    return StreamingResponse(_frames(job.spec, run.items), media_type="text/event-stream", headers=headers)
