"""One handler per ``taskType``; each adds what its task produced to the batch's answer.

A task that fails adds an error and leaves the other tasks of the request alone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from gatewright.api.tasks import schemas as w
from gatewright.api.tasks.codec import render, spec_of, submit
from gatewright.api.tasks.errors import error_object, from_validation, invalid, status_for
from gatewright.api.tasks.translate import Item, ack_item, processing_item
from gatewright.core.errors import GatewrightError, NotFound
from gatewright.core.jobs import Job, Jobs
from gatewright.core.pipeline import Gateway
from gatewright.core.platform import Principal


@dataclass
class Batch:
    """One request's tasks and the answer they build: ``data`` items and ``(status, error)`` pairs."""

    gateway: Gateway
    jobs: Jobs
    principal: Principal | None
    data: list[Item] = field(default_factory=list)
    errors: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    retry_after: float | None = None  # from a rate-limit error, for the retry-after header

    def add_results(self, job: Job) -> None:
        for index, outcome in enumerate(job.outcomes):
            if outcome is None:
                self.data.append(processing_item(job.spec.uuid, index))
            elif outcome.error is not None:
                self.errors.append((_status(outcome.error), render(job.spec, outcome)["error"]))
                self.retry_after = getattr(outcome.error, "retry_after", None) or self.retry_after
            else:
                self.data.append(render(job.spec, outcome))


def _status(error: GatewrightError) -> int:
    # A result stored by a version before neutral outcomes reads back as the base class with this
    # API's own code (store/tasks.py): its status is that code's, as that version answered it.
    if type(error) is GatewrightError and error.code:
        return status_for(error.code)
    return error.status


Handler = Callable[[Batch, dict[str, Any]], Awaitable[None]]


async def text_inference(batch: Batch, raw: dict[str, Any]) -> None:
    spec = spec_of(raw)
    batch.gateway.catalog.resolve(spec.wire.model)  # an unknown model is refused before any ack
    if spec.delivery == "stream":
        raise invalid(
            "invalidDeliveryMethod",
            "deliveryMethod 'stream' answers with an event stream, so a stream task must be the only task "
            "of its request (an authentication task may come first).",
            "deliveryMethod",
        )
    job, _ = await submit(batch.jobs, spec, batch.principal)
    if spec.delivery == "async":
        batch.data.append(ack_item(spec.uuid))
        return
    if job.running:
        await job.done.wait()
    batch.add_results(job)


def with_webhook(job: Job, index: int, item: Item) -> Item:
    state = job.webhooks[index]
    if state is None:
        return item
    # gatewright extension: each POST to the task's webhookURL, as polled state.
    return {**item, "webhook": {"state": state.state, "attempts": [a.as_dict() for a in state.attempts]}}


async def get_response(batch: Batch, raw: dict[str, Any]) -> None:
    try:
        task = w.GetResponseTask.model_validate(raw)
    except ValidationError as error:
        raise from_validation(error) from None
    job = await batch.jobs.find(task.taskUUID.lower(), batch.principal)
    if job is None:
        raise NotFound(
            f"No task with taskUUID {task.taskUUID} was submitted with this account.",
            param="taskUUID",
            code="taskNotFound",
        )
    for index, outcome in enumerate(job.outcomes):
        item = processing_item(task.taskUUID, index) if outcome is None else render(job.spec, outcome)
        batch.data.append(with_webhook(job, index, item))


async def ping(batch: Batch, raw: dict[str, Any]) -> None:
    try:
        w.PingTask.model_validate(raw)
    except ValidationError as error:
        raise from_validation(error) from None
    batch.data.append({"taskType": "ping", "pong": True})


async def misplaced_authentication(batch: Batch, raw: dict[str, Any]) -> None:
    raise invalid("invalidTaskOrder", "The authentication task must be the first element of the array.", "taskType")


HANDLERS: dict[str, Handler] = {
    "textInference": text_inference,
    "getResponse": get_response,
    "ping": ping,
    "authentication": misplaced_authentication,
}


def error_for(task: Any, error: Any) -> dict[str, Any]:
    task_type = task.get("taskType") if isinstance(task, dict) else None
    task_uuid = task.get("taskUUID") if isinstance(task, dict) else None
    return error_object(
        error,
        task_type if isinstance(task_type, str) else None,
        task_uuid if isinstance(task_uuid, str) else None,
    )
