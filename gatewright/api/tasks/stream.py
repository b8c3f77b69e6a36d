"""SSE for ``deliveryMethod: "stream"`` (conformance.md §1.7).

Each frame is ``data: {json}``: ``{"taskType", "taskUUID", "resultIndex", "delta": {"text": …}}`` or
``{… "delta": {"reasoningContent": …}}`` while generating; then one closing frame per result with an
empty ``delta``, ``finishReason``, ``seed``, tool calls as ``tools`` and, when the task asked for
them, ``usage`` and ``cost``. A failure after the first frame is ``{"errors": [error]}``; the stream
ends with ``data: [DONE]``. Results of a task with ``numberResults > 1`` follow each other, told
apart by ``resultIndex``. Errors before the first frame are a plain ``{"errors"}`` response.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import Response, StreamingResponse

from gatewright.api.sse import DONE, data_frame
from gatewright.api.tasks.codec import spec_of
from gatewright.api.tasks.errors import status_for
from gatewright.api.tasks.responses import errors_response, single_error
from gatewright.api.tasks.translate import TASK_TYPE
from gatewright.core.accumulate import Accumulator
from gatewright.core.errors import ClientError, Conflict, GatewrightError
from gatewright.core.events import Event, ReasoningDelta, TextDelta
from gatewright.core.jobs import Item, Job, Jobs, Outcome
from gatewright.core.pipeline import Call, Gateway
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


class ResultStream:
    """Renders one result's events and folds them into the outcome that gets stored."""

    def __init__(self, task_uuid: str, index: int, seed: int | None) -> None:
        self.task_uuid = task_uuid
        self.index = index
        self.seed = seed
        self.acc = Accumulator(1)

    def frame(self, event: Event) -> bytes | None:
        self.acc.add(event)
        match event:
            case TextDelta(text=text) if text:
                return delta_frame(self.task_uuid, self.index, "text", text)
            case ReasoningDelta(text=text) if text:
                return delta_frame(self.task_uuid, self.index, "reasoningContent", text)
        return None

    def outcome(self) -> Outcome:
        choice = self.acc.finish()[0]
        return Outcome(self.index, self.seed, choice, self.acc.usage, self.acc.cost)


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


async def _one(jobs: Jobs, job: Job, index: int, call: Call | None) -> AsyncIterator[bytes]:
    seed = job.spec.seeds[index]
    if call is None:
        try:
            call = await jobs.start_call(job, index)
        except Exception as error:
            item = await jobs.complete(job, index, jobs.outcome_of(index, seed, error))
            yield error_frame(item["error"])
            return
    result = ResultStream(job.spec.uuid, index, seed)
    try:
        async for event in call.events:
            frame = result.frame(event)
            if frame is not None:
                yield frame
    except Exception as error:
        item = await jobs.complete(job, index, jobs.outcome_of(index, seed, error))
        yield error_frame(item["error"])
        return
    finally:
        await call.aclose()
    yield closing_frame(await jobs.complete(job, index, result.outcome()))


async def _results(jobs: Jobs, job: Job, first: Call | None, lead: list[bytes]) -> AsyncIterator[bytes]:
    """Frames of every unfinished result, one after the other; each result is stored as it ends."""
    try:
        for frame in lead:
            yield frame
        for index in job.pending():
            call, first = first, None
            async for frame in _one(jobs, job, index, call):
                yield frame
        yield DONE
    finally:
        if job.pending():
            jobs.fail_pending_soon(job, StreamAborted("The client closed the stream first.", code="streamAborted"))
        jobs.release(job)


async def open_stream(gateway: Gateway, jobs: Jobs, principal: Principal | None, raw: dict[str, Any]) -> Response:
    try:
        spec = spec_of(raw)
        gateway.catalog.resolve(spec.wire.model)
        job, started = await jobs.submit(spec, principal, run=False)
    except GatewrightError as error:
        return single_error(error, TASK_TYPE)
    if not started:
        if job.finished and job.status == "success":
            done = [item for item in job.items if item is not None]
            return StreamingResponse(_replayed(done), media_type="text/event-stream", headers=SSE_HEADERS)
        running = Conflict(
            f"The task {spec.uuid} is already running; poll it with getResponse.",
            param="taskUUID",
            code="conflictTaskRunning",
        )
        return single_error(running, TASK_TYPE)
    pending = job.pending()
    lead: list[bytes] = []
    first: Call | None = None
    try:
        first = await jobs.start_call(job, pending[0])
    except Exception as error:  # before any byte: a plain error answer when nothing else is to come
        outcome = jobs.outcome_of(pending[0], job.spec.seeds[pending[0]], error)
        item = await jobs.complete(job, pending[0], outcome)
        if len(pending) == 1:
            jobs.release(job)
            core_error = job.errors.get(pending[0])
            status = core_error.status if core_error else status_for(item["error"]["code"])
            return errors_response([(status, item["error"])], getattr(error, "retry_after", None))
        lead.append(error_frame(item["error"]))
    headers = dict(SSE_HEADERS)
    if first is not None:
        headers["x-gatewright-deployment"] = first.deployment
    return StreamingResponse(_results(jobs, job, first, lead), media_type="text/event-stream", headers=headers)
