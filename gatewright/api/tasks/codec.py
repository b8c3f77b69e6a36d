"""The task API's side of durable jobs: a task object → ``TaskSpec``, outcomes → wire items.

``spec_of`` is used for a task as it arrives and, through ``TaskApiCodec.rebuild``, for a task read
back from the store after a restart, so both give the same requests (the generated seed is stored).
Jobs store neutral outcomes; ``result_item`` renders one whenever it is answered, polled or posted.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import orjson
from pydantic import ValidationError

from gatewright.api.tasks import schemas as w
from gatewright.api.tasks.errors import from_validation
from gatewright.api.tasks.translate import TASK_TYPE, Item, result_item, result_seeds, to_core
from gatewright.core.errors import Conflict
from gatewright.core.jobs import Job, JobConflict, Jobs, Outcome, TaskSpec
from gatewright.core.platform import Principal

# What an identical retry may change: the SDK retries with the same task, but a client may
# switch how it waits for it (e.g. an async task re-sent as sync to wait for its result).
NOT_IN_FINGERPRINT = frozenset({"deliveryMethod"})


def fingerprint(raw: dict[str, Any]) -> str:
    canonical = {k: v for k, v in raw.items() if k not in NOT_IN_FINGERPRINT}
    return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()


def parse_text_task(raw: dict[str, Any]) -> w.TextInferenceTask:
    try:
        return w.TextInferenceTask.model_validate(raw)
    except ValidationError as error:
        raise from_validation(error) from None


def spec_of(raw: dict[str, Any], print_: str | None = None) -> TaskSpec:
    """Validate and translate one ``textInference`` task; raises ``InvalidRequest``."""
    task = parse_text_task(raw)
    seed = task.seed if task.seed is not None else random.getrandbits(32)  # the reference's default range
    requests = to_core(task, seed)
    stored = {**raw, "seed": seed}
    return TaskSpec(
        uuid=task.taskUUID,
        task_type=TASK_TYPE,
        stored=stored,
        fingerprint=print_ or fingerprint(raw),
        delivery=task.deliveryMethod,
        requests=requests,
        seeds=result_seeds(seed, task.numberResults),
        webhook_url=task.webhookURL,
        wire=task,
    )


def render(spec: TaskSpec, outcome: Outcome) -> Item:
    return result_item(spec.wire, outcome)


def conflict(spec: TaskSpec) -> Conflict:
    return Conflict(
        f"The taskUUID {spec.uuid} already names a different task. Send each new task with a new UUID v4; "
        "resend a task unchanged to get its state back.",
        param="taskUUID",
        code="conflictTaskUUID",
    )


async def submit(jobs: Jobs, spec: TaskSpec, principal: Principal | None) -> tuple[Job, bool]:
    try:
        return await jobs.submit(spec, principal)
    except JobConflict:
        raise conflict(spec) from None


class TaskApiCodec:
    def rebuild(self, stored: dict[str, Any], fingerprint: str) -> TaskSpec:
        return spec_of(stored, fingerprint)

    def webhook_body(self, spec: TaskSpec, outcome: Outcome) -> bytes:
        item = render(spec, outcome)
        if item.get("status") == "error":
            return orjson.dumps({"errors": [item["error"]]})
        return orjson.dumps({"data": [item]})
