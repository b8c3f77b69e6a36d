"""Stored responses as this dialect writes them: one document per response holding the Response
object and the conversation that led to it (the stored prefix, then the request's own input).

``previous_response_id`` continues from a stored response: its conversation plus its output are the
new request's prefix, in the same order, so the embedded engine's prompt cache finds them again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from gatewright.api.responses import schemas as w
from gatewright.core.clock import utcnow
from gatewright.core.errors import InternalError, InvalidRequest, NotFound
from gatewright.core.stored import ResponseStore

ITEMS: TypeAdapter[list[Any]] = TypeAdapter(list[w.InputItem])


@dataclass(frozen=True, slots=True)
class Stored:
    response: dict[str, Any]
    items: list[dict[str, Any]]  # the conversation before the output, as listed by input_items

    def conversation(self) -> list[dict[str, Any]]:
        """What a response continuing from this one starts with."""
        return [*self.items, *self.response["output"]]


def encode(response: dict[str, Any], items: list[dict[str, Any]]) -> bytes:
    return orjson.dumps({"response": response, "items": items})


async def load(store: ResponseStore, account_id: int, response_id: str) -> Stored | None:
    document = await store.load(account_id, response_id, utcnow())
    if document is None:
        return None
    data = orjson.loads(document)
    return Stored(data["response"], data["items"])


def not_found(response_id: str) -> NotFound:
    return NotFound(f"Response with id '{response_id}' not found.", param="response_id", code="not_found")


async def find(store: ResponseStore, account_id: int, response_id: str) -> Stored:
    stored = await load(store, account_id, response_id)
    if stored is None:
        raise not_found(response_id)
    return stored


async def previous(store: ResponseStore, account_id: int, response_id: str) -> list[dict[str, Any]]:
    """The conversation a ``previous_response_id`` continues (400 when there is none, as OpenAI)."""
    stored = await load(store, account_id, response_id)
    if stored is None:
        raise InvalidRequest(
            f"Previous response with id '{response_id}' not found.",
            param="previous_response_id",
            code="previous_response_not_found",
        )
    return stored.conversation()


def as_items(conversation: list[dict[str, Any]]) -> list[Any]:
    """Stored items parsed back into request items (the same schema a client's input goes through)."""
    try:
        return ITEMS.validate_python(conversation)
    except ValidationError as error:  # written by this code: never the caller's fault
        raise InternalError(f"a stored conversation does not parse: {error}") from None


async def save(
    store: ResponseStore,
    account_id: int,
    response: dict[str, Any],
    items: list[dict[str, Any]],
    retention: timedelta,
) -> None:
    created: datetime = utcnow()
    await store.save(account_id, response["id"], encode(response, items), created, created + retention)
