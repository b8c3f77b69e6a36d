"""Durable tasks in SQL: the ``core.jobs.TaskStore``, one ``tasks`` row per task.

Results are stored as neutral outcomes (text, reasoning, tool calls, finish, usage, cost, or an
error by its class in ``core.errors``), in a versioned JSON form of this module's own; the dialect
renders them when it answers. A result written ahead of its charge carries the run's request id
under ``charging`` (``core.jobs``: it is final only once that charge is found). Rows name their
owner and carry its heartbeat (``updated_at``).

Rows written before neutral outcomes hold each result as the task API rendered it (``LEGACY``):
those read back as the same result (text, reasoning, tools, finish reason, seed; cost and usage
where the task asked for them, which is when they were stored; an error with its code, message
and parameter, as the base ``GatewrightError``: its class was not stored, and the task API gives
it the status of its code, as that version did).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from gatewright.core import errors
from gatewright.core.billing import usd_to_credits
from gatewright.core.clock import aware, utcnow
from gatewright.core.jobs import Outcome, TaskRecord, WebhookState
from gatewright.core.types import Choice, Cost, ToolCall, Usage
from gatewright.core.webhooks import Attempt
from gatewright.store.tables import tasks

FORMAT = 1  # of a stored outcome
UNREADABLE = "This result was stored by an earlier gateway version and cannot be read back."

# -- outcomes as JSON ----------------------------------------------------------------------------


def _core_class(error: errors.GatewrightError) -> str:
    """The nearest class of ``core.errors`` (a dialect's own subclass is stored as its parent)."""
    for cls in type(error).__mro__:
        if cls.__module__ == errors.__name__:
            return cls.__name__
    return errors.InternalError.__name__


def _error_classes() -> dict[str, type[errors.GatewrightError]]:
    found: dict[str, type[errors.GatewrightError]] = {}
    todo: list[type[errors.GatewrightError]] = [errors.GatewrightError]
    while todo:
        cls = todo.pop()
        if cls.__module__ == errors.__name__:
            found[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    return found


# Attributes some error classes add to the base ones (``RateLimited``, ``UpstreamError``).
_EXTRA = ("retry_after", "upstream_status")


def error_json(error: errors.GatewrightError) -> dict[str, Any]:
    data = {
        "class": _core_class(error),
        "message": error.message,
        "code": error.code,
        "param": error.param,
        "status": error.status,
    }
    data.update({name: getattr(error, name) for name in _EXTRA if hasattr(error, name)})
    return data


def error_of(data: dict[str, Any]) -> errors.GatewrightError:
    cls = _error_classes().get(data["class"], errors.InternalError)
    error = cls.__new__(cls)
    # The base initialiser on purpose: subclasses' own signatures differ, the stored fields do not.
    errors.GatewrightError.__init__(
        error, data["message"], param=data.get("param"), code=data.get("code"), status=data.get("status")
    )
    for name in _EXTRA:
        if name in data:
            setattr(error, name, data[name])
    return error


def outcome_json(outcome: Outcome) -> dict[str, Any]:
    usage = outcome.usage
    data: dict[str, Any] = {
        "v": FORMAT,
        "index": outcome.index,
        "seed": outcome.seed,
        "usage": {
            "input": usage.input_tokens,
            "output": usage.output_tokens,
            "cached": usage.cached_tokens,
            "reasoning": usage.reasoning_tokens,
            "cache_write": usage.cache_write_tokens,
            "estimated": usage.estimated,
        },
        "cost": None if outcome.cost is None else {"credits": outcome.cost.credits, "usd": outcome.cost.usd},
    }
    if outcome.choice is not None:
        choice = outcome.choice
        data["choice"] = {
            "text": choice.text,
            "reasoning": choice.reasoning,
            "tool_calls": [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in choice.tool_calls],
            "finish": choice.finish_reason,
            "stop_sequence": choice.stop_sequence,
        }
    if outcome.error is not None:
        data["error"] = error_json(outcome.error)
    return data


def outcome_of(data: Any, index: int) -> Outcome:
    if isinstance(data, dict) and "v" not in data and data.get("status") in LEGACY:
        return _legacy_outcome(data, index)
    if not isinstance(data, dict) or data.get("v") != FORMAT:
        return Outcome(index, None, error=errors.InternalError(UNREADABLE))
    u = data["usage"]
    usage = Usage(
        input_tokens=u["input"],
        output_tokens=u["output"],
        cached_tokens=u["cached"],
        reasoning_tokens=u["reasoning"],
        cache_write_tokens=u["cache_write"],
        estimated=u["estimated"],
    )
    cost = None if data["cost"] is None else Cost(data["cost"]["credits"], data["cost"]["usd"])
    choice = None
    if "choice" in data:
        c = data["choice"]
        choice = Choice(
            index=0,
            text=c["text"],
            reasoning=c["reasoning"],
            tool_calls=[ToolCall(t["id"], t["name"], t["arguments"]) for t in c["tool_calls"]],
            finish_reason=c["finish"],
            stop_sequence=c["stop_sequence"],
        )
    error = error_of(data["error"]) if "error" in data else None
    return Outcome(data["index"], data["seed"], choice, usage, cost, error)


# The statuses of a result item as the task API rendered it, stored as is before neutral outcomes.
LEGACY = ("success", "error")


def _legacy_outcome(item: dict[str, Any], index: int) -> Outcome:
    """A result stored as its task-API item by a version before neutral outcomes."""
    index = item.get("resultIndex", index)
    seed = item.get("seed")
    if item["status"] == "error":
        wire = item.get("error") or {}
        error = errors.GatewrightError(
            wire.get("message") or "The task failed.", param=wire.get("parameter"), code=wire.get("code")
        )
        return Outcome(index, seed, error=error)
    u = item.get("usage") or {}
    usage = Usage(
        input_tokens=u.get("promptTokens", 0),
        output_tokens=u.get("completionTokens", 0),
        reasoning_tokens=u.get("thinkingTokens", 0),
    )
    usd = item.get("cost")
    cost = None if usd is None else Cost(usd_to_credits(usd), usd)
    tools = [
        ToolCall(t["id"], t["name"], t["input"] if isinstance(t["input"], str) else orjson.dumps(t["input"]).decode())
        for t in item.get("tools") or ()
    ]
    choice = Choice(
        index=0,
        text=item.get("text", ""),
        reasoning=item.get("reasoningContent", ""),
        tool_calls=tools,
        finish_reason=item.get("finishReason", "stop"),
    )
    return Outcome(index, seed, choice, usage, cost)


def _results_json(record: TaskRecord) -> list[dict[str, Any] | None]:
    out: list[dict[str, Any] | None] = []
    for i, outcome in enumerate(record.outcomes):
        if outcome is not None:
            out.append(outcome_json(outcome))
        elif i in record.charging:
            run, written = record.charging[i]
            out.append({**outcome_json(written), "charging": run})
        else:
            out.append(None)
    return out


def _results_of(entries: list[Any]) -> tuple[list[Outcome | None], dict[int, tuple[str, Outcome]]]:
    outcomes: list[Outcome | None] = []
    charging: dict[int, tuple[str, Outcome]] = {}
    for i, entry in enumerate(entries):
        if isinstance(entry, dict) and "charging" in entry:
            charging[i] = (entry["charging"], outcome_of(entry, i))
            outcomes.append(None)
        else:
            outcomes.append(None if entry is None else outcome_of(entry, i))
    return outcomes, charging


def _webhooks_json(webhooks: list[WebhookState | None]) -> list[dict[str, Any] | None]:
    return [
        None if w is None else {"index": i, "state": w.state, "attempts": [a.as_dict() for a in w.attempts]}
        for i, w in enumerate(webhooks)
    ]


def _webhooks_of(entries: list[Any] | None, count: int) -> list[WebhookState | None]:
    webhooks: list[WebhookState | None] = [None] * count
    for entry in entries or ():
        # "resultIndex": as versions before neutral outcomes stored it.
        index = -1
        if isinstance(entry, dict):
            index = int(entry.get("index", entry.get("resultIndex", -1)) or 0)
        if 0 <= index < count:
            attempts = [Attempt(a["attempt"], a["at"], a["status"], a["error"]) for a in entry["attempts"]]
            webhooks[index] = WebhookState(entry["state"], attempts)
    return webhooks


def _state(record: TaskRecord) -> dict[str, Any]:
    return {
        "status": record.status,
        "results": _results_json(record),
        "webhook_attempts": _webhooks_json(record.webhooks),
        "webhook_pending": any(w is not None and w.state == "pending" for w in record.webhooks),
        "attempt": record.attempt,
        "owner": record.owner,
        "updated_at": record.updated_at or utcnow(),
    }


def task_record(row: Any) -> TaskRecord:
    results = list(row.results or [])
    outcomes, charging = _results_of(results)
    return TaskRecord(
        key=row.task_uuid,
        account_id=row.account_id,
        key_id=row.key_id,
        task_type=row.task_type,
        stored=row.request,
        fingerprint=row.fingerprint,
        delivery=row.delivery,
        webhook_url=row.webhook_url,
        status=row.status,
        outcomes=outcomes,
        webhooks=_webhooks_of(row.webhook_attempts, len(results)),
        attempt=row.attempt,
        owner=row.owner,
        updated_at=aware(row.updated_at),
        charging=charging,
    )


class SqlTaskStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @property
    def shared(self) -> bool:
        # A SQLite file is one gateway process's (its workers serve one port, not one file).
        return self.engine.dialect.name != "sqlite"

    async def insert(self, record: TaskRecord) -> bool:
        row = {
            "task_uuid": record.key,
            "account_id": record.account_id,
            "key_id": record.key_id,
            "task_type": record.task_type,
            "request": record.stored,
            "fingerprint": record.fingerprint,
            "delivery": record.delivery,
            "webhook_url": record.webhook_url,
            "created_at": utcnow(),
            **_state(record),
        }
        try:
            async with self.engine.begin() as conn:
                await conn.execute(tasks.insert(), row)
        except IntegrityError:
            return False
        return True

    async def save(self, record: TaskRecord) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(update(tasks).where(tasks.c.task_uuid == record.key).values(**_state(record)))

    async def load(self, key: str) -> TaskRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(tasks).where(tasks.c.task_uuid == key))).first()
        return None if row is None else task_record(row)

    async def unfinished(self, not_owner: str, stale_before: datetime | None) -> list[TaskRecord]:
        query = select(tasks).where(
            or_(tasks.c.status == "processing", tasks.c.webhook_pending.is_(True)),
            or_(tasks.c.owner.is_(None), tasks.c.owner != not_owner),
        )
        if stale_before is not None:
            query = query.where(tasks.c.updated_at < stale_before)
        async with self.engine.connect() as conn:
            rows = list(await conn.execute(query))
        return [task_record(row) for row in rows]

    async def claim(self, key: str, owner: str | None, new_owner: str) -> bool:
        owned = tasks.c.owner.is_(None) if owner is None else tasks.c.owner == owner
        statement = update(tasks).where(tasks.c.task_uuid == key, owned).values(owner=new_owner, updated_at=utcnow())
        async with self.engine.begin() as conn:
            result = await conn.execute(statement)
        return bool(result.rowcount)

    async def give_up(self, key: str, message: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(tasks)
                .where(tasks.c.task_uuid == key)
                .values(status="error", error={"message": message}, webhook_pending=False, updated_at=utcnow())
            )

    async def heartbeat(self, owner: str, keys: list[str]) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(tasks).where(tasks.c.owner == owner, tasks.c.task_uuid.in_(keys)).values(updated_at=utcnow())
            )
