"""What durable jobs need from a webhook sender: a seam, so core holds no HTTP client.

The signed HTTP delivery itself is ``gatewright.outbound.webhooks.WebhookSender``; jobs record each
``Attempt`` it reports into the task's state (shown when the task is polled).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Attempt:
    attempt: int
    at: str
    status: int | None  # the receiver's HTTP status; None when it could not be reached
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def as_dict(self) -> dict[str, Any]:
        return {"attempt": self.attempt, "at": self.at, "status": self.status, "error": self.error}


Recorder = Callable[[Attempt], Awaitable[None]]


class WebhookDelivery(Protocol):
    async def deliver(self, url: str, body: bytes, delivery_id: str, record: Recorder, done: int = 0) -> bool:
        """POST ``body`` until the receiver takes it or the attempts run out, reporting each attempt
        to ``record``; ``done`` attempts were made before (a restart). True once delivered."""
        ...

    async def refusal(self, url: str) -> str | None:
        """Why ``url`` may not receive deliveries (an internal address, ...), or None; asked when a
        task is submitted, and checked again by ``deliver`` when it connects."""
        ...

    async def close(self) -> None: ...
