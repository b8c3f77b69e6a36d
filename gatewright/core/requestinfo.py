"""What one request turned out to be (account, key, model, deployment, tokens, credits, outcome),
gathered while it runs for its access line.

The front door makes a ``RequestFacts`` per request and makes it current (a context variable) only
when the access log wants it (JSON lines); the pipeline fills it in. Tasks the request starts (the
streaming body) share the same object, so what they add is there when the access line is written.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(slots=True)
class RequestFacts:
    account_id: int | None = None
    key_prefix: str | None = None  # never the key itself
    model: str | None = None
    deployment: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    credits: int = 0
    outcome: str | None = None  # ok, aborted (client left or cut), error


CURRENT: ContextVar[RequestFacts | None] = ContextVar("gatewright_request_facts", default=None)
