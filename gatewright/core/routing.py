"""Choosing where a request runs: deployments of a model, retries, fallbacks, circuit breakers.

The router opens a backend stream and waits for its first event before answering, so every failure
that can be retried or routed around happens before the caller has seen a byte. Failed attempts
leave no usage behind: each attempt starts with a fresh meter.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field

from gatewright.core.backend import Backend, CallContext
from gatewright.core.catalog import Catalog, Deployment, ModelEntry
from gatewright.core.errors import (
    GatewrightError,
    InternalError,
    ServerError,
    UpstreamError,
    UpstreamUnavailable,
)
from gatewright.core.events import Event
from gatewright.core.types import CoreRequest, Usage

# Upstream statuses worth another attempt (the same deployment or the next one).
RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})


def is_retryable(error: GatewrightError) -> bool:
    return isinstance(error, UpstreamError) and error.upstream_status in RETRYABLE_STATUS


@dataclass(slots=True)
class Breaker:
    """Skip a deployment for ``cooldown`` seconds after ``threshold`` consecutive failures."""

    threshold: int = 3
    cooldown: float = 30.0
    failures: int = 0
    open_until: float = 0.0

    def available(self, now: float) -> bool:
        return now >= self.open_until

    def record_success(self) -> None:
        self.failures = 0
        self.open_until = 0.0

    def record_failure(self, now: float) -> None:
        self.failures += 1
        if self.failures >= self.threshold:
            self.open_until = now + self.cooldown
            self.failures = 0


@dataclass(slots=True)
class Opened:
    """An open stream whose first event has arrived; ``entry`` is the model that answered."""

    entry: ModelEntry
    deployment: Deployment
    events: AsyncIterator[Event]


@dataclass
class RetryPolicy:
    base_delay: float = 0.25
    max_delay: float = 8.0
    max_retry_after: float = 30.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        delay: float = min(self.base_delay * 2**attempt, self.max_delay)
        return delay * (0.5 + random.random() / 2)


@dataclass
class Router:
    catalog: Catalog
    backends: Mapping[str, Backend]  # deployment name → backend
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    breakers: dict[str, Breaker] = field(default_factory=dict)

    def backend_for(self, deployment: Deployment) -> Backend:
        return self.backends[deployment.name]

    def chain(self, entry: ModelEntry) -> list[ModelEntry]:
        """The model and its fallbacks, in order, active ones only."""
        models = [entry]
        for name in entry.fallbacks:
            fallback = self.catalog.find(name)
            if fallback is not None and fallback.active and fallback not in models:
                models.append(fallback)
        return models

    def _breaker(self, deployment: Deployment) -> Breaker:
        breaker = self.breakers.get(deployment.name)
        if breaker is None:
            breaker = self.breakers[deployment.name] = Breaker()
        return breaker

    def order(self, entry: ModelEntry) -> list[Deployment]:
        """Deployments to try: available ones first (weighted or least busy), broken ones last."""
        now = time.monotonic()
        active = [d for d in entry.deployments if d.active]
        ready = [d for d in active if self._breaker(d).available(now)]
        broken = [d for d in active if d not in ready]
        if entry.routing == "least-busy":
            ready.sort(key=lambda d: self.backend_for(d).in_flight)
        elif len(ready) > 1:
            ready = _weighted_shuffle(ready)
        return ready + broken

    async def count_prompt_tokens(self, entry: ModelEntry, request: CoreRequest) -> int:
        deployment = self.order(entry)[0]
        return await self.backend_for(deployment).count_prompt_tokens(request)

    async def open(self, entry: ModelEntry, request: CoreRequest, ctx: CallContext) -> Opened:
        last_error: GatewrightError | None = None
        for model in self.chain(entry):
            routed = request if model is entry else _retarget(request, model)
            for deployment in self.order(model):
                try:
                    events = await self._attempts(deployment, routed, ctx)
                except GatewrightError as error:
                    if not is_retryable(error):
                        raise
                    last_error = error
                    continue
                return Opened(model, deployment, events)
        if last_error is not None:
            raise last_error
        raise UpstreamUnavailable(f"no deployment of `{entry.id}` is available")

    async def _attempts(self, deployment: Deployment, request: CoreRequest, ctx: CallContext) -> AsyncIterator[Event]:
        backend = self.backend_for(deployment)
        breaker = self._breaker(deployment)
        attempt = 0
        while True:
            ctx.usage = Usage()  # failed attempts are never billed
            stream = backend.stream(request, ctx)
            try:
                first = await anext(stream)
            except StopAsyncIteration:
                breaker.record_success()
                return _empty()
            except GatewrightError as error:
                await stream.aclose()  # type: ignore[attr-defined]
                if not is_retryable(error):
                    raise
                breaker.record_failure(time.monotonic())
                if attempt >= deployment.max_retries or not breaker.available(time.monotonic()):
                    raise
                await asyncio.sleep(self.policy.delay(attempt, getattr(error, "retry_after", None)))
                attempt += 1
                continue
            except Exception as error:  # a backend bug must not look like a client error
                await stream.aclose()  # type: ignore[attr-defined]
                raise InternalError(f"backend {deployment.name} failed: {error!r}") from error
            breaker.record_success()
            return _prepend(first, stream)


def _weighted_shuffle(deployments: Sequence[Deployment]) -> list[Deployment]:
    # Efraimidis–Spirakis: sort by u^(1/w); heavier deployments tend to come first.
    return sorted(deployments, key=lambda d: random.random() ** (1.0 / d.weight), reverse=True)


def _retarget(request: CoreRequest, entry: ModelEntry) -> CoreRequest:
    from dataclasses import replace

    return replace(request, model=entry.id)


async def _prepend(first: Event, rest: AsyncIterator[Event]) -> AsyncIterator[Event]:
    try:
        yield first
        async for event in rest:
            yield event
    finally:
        await rest.aclose()  # type: ignore[attr-defined]


async def _empty() -> AsyncIterator[Event]:
    return
    yield  # pragma: no cover


__all__ = ["Breaker", "Opened", "RetryPolicy", "Router", "ServerError", "is_retryable"]
