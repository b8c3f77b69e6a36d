"""Choosing where a request runs: deployments of a model, retries, fallbacks, circuit breakers.

The router opens a backend stream and waits for its first event before answering, so every failure
that can be retried or routed around happens before the caller has seen a byte. Failed attempts
leave no usage behind: each attempt starts with a fresh meter.

Order of attempts for one request: every deployment whose breaker is closed, of the model and then
of each fallback (weighted shuffle or least busy within a model), each retried with backoff on
429/5xx/connection errors; then, as a last resort, the deployments whose breaker is open, once each
and without retries (a probe that closes the breaker when the upstream has recovered).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

from gatewright.core import tracing
from gatewright.core.backend import Backend, CallContext, Embedder
from gatewright.core.catalog import Catalog, Deployment, ModelEntry
from gatewright.core.errors import (
    GatewrightError,
    InternalError,
    ServerError,
    UpstreamError,
    UpstreamUnavailable,
)
from gatewright.core.events import Event
from gatewright.core.metrics import record_upstream
from gatewright.core.types import CoreRequest, EmbeddingRequest, Embeddings, ImagePart, Usage

log = logging.getLogger("gatewright.routing")

# Upstream statuses worth another attempt at the same deployment.
RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})


def is_retryable(error: GatewrightError) -> bool:
    """Worth trying the same deployment again after a pause."""
    return isinstance(error, UpstreamError) and error.upstream_status in RETRYABLE_STATUS


def can_fail_over(error: GatewrightError) -> bool:
    """Not the caller's fault, so another deployment or model may well answer."""
    return isinstance(error, ServerError)


@dataclass(slots=True)
class Breaker:
    """Skip a deployment for ``cooldown`` seconds after ``threshold`` consecutive failures.

    After the cooldown the deployment is tried again (half-open): one success closes the breaker,
    one failure opens it for another cooldown.
    """

    threshold: int = 3
    cooldown: float = 30.0
    failures: int = 0
    open_until: float = 0.0
    tripped: bool = False

    def available(self, now: float) -> bool:
        return now >= self.open_until

    def record_success(self) -> None:
        self.failures = 0
        self.open_until = 0.0
        self.tripped = False

    def record_failure(self, now: float) -> None:
        self.failures += 1
        if self.tripped or self.failures >= self.threshold:
            self.open_until = now + self.cooldown
            self.failures = 0
            self.tripped = True


@dataclass(slots=True)
class Opened:
    """An open stream whose first event has arrived; ``entry`` is the model that answered.

    ``first`` is that event (None: the stream ended at once), ``rest`` the stream after it: kept
    apart rather than joined by one more generator, which would cost a layer on every event."""

    entry: ModelEntry
    deployment: Deployment
    first: Event | None
    rest: AsyncIterator[Event]

    @property
    def events(self) -> AsyncIterator[Event]:
        """The whole stream as one iterator (for callers that wrap it anyway)."""
        return _prepend(self.first, self.rest)


@dataclass
class RetryPolicy:
    base_delay: float = 0.25
    max_delay: float = 8.0
    # An upstream asking for a longer pause is not waited for: the next deployment is tried instead.
    max_retry_after: float = 20.0

    def delay(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds to wait before retry ``attempt`` (0-based), or ``None`` for "do not retry here"."""
        if retry_after is not None:
            return retry_after if retry_after <= self.max_retry_after else None
        delay: float = min(self.base_delay * 2**attempt, self.max_delay)
        return delay * (0.5 + random.random() / 2)  # jitter, so callers retrying together spread out


@dataclass
class Router:
    catalog: Catalog
    backends: Mapping[str, Backend]  # deployment name → backend
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    breakers: dict[str, Breaker] = field(default_factory=dict)

    def backend_for(self, deployment: Deployment) -> Backend:
        return self.backends[deployment.name]

    def chain(self, entry: ModelEntry, request: CoreRequest | None = None) -> list[ModelEntry]:
        """The model and its fallbacks, in order, active ones only; with a request, only the
        fallbacks that can do what it asks (a fallback without tools cannot answer a tool call)."""
        models = [entry]
        for name in entry.fallbacks:
            fallback = self.catalog.find(name)
            if fallback is None or not fallback.active or fallback in models:
                continue
            if request is None or can_serve(fallback, request):
                models.append(fallback)
        return models

    def breaker(self, deployment: Deployment) -> Breaker:
        breaker = self.breakers.get(deployment.name)
        if breaker is None:
            breaker = Breaker(deployment.breaker_failures, deployment.breaker_cooldown)
            self.breakers[deployment.name] = breaker
        return breaker

    def _retry_delay(self, error: GatewrightError, attempt: int, retries: int, breaker: Breaker) -> float | None:
        """How long to wait before trying the same deployment again; None: give up on it."""
        delay = self.policy.delay(attempt, getattr(error, "retry_after", None))
        if not is_retryable(error) or attempt >= retries or delay is None or not breaker.available(time.monotonic()):
            return None
        return delay

    def _split(self, entry: ModelEntry, now: float) -> tuple[list[Deployment], list[Deployment]]:
        """(deployments to try in order, deployments whose breaker is open)."""
        ready: list[Deployment] = []
        broken: list[Deployment] = []
        for deployment in entry.deployments:
            if deployment.active:
                (ready if self.breaker(deployment).available(now) else broken).append(deployment)
        if len(ready) > 1:
            if entry.routing == "least-busy":
                # Stable: ties go to the deployment listed first.
                ready.sort(key=lambda d: self.backends[d.name].in_flight)
            else:
                ready = _weighted_shuffle(ready)
        return ready, broken

    def order(self, entry: ModelEntry) -> list[Deployment]:
        """Deployments of one model to try: available ones first, broken ones last."""
        ready, broken = self._split(entry, time.monotonic())
        return ready + broken

    async def count_prompt_tokens(self, entry: ModelEntry, request: CoreRequest) -> int:
        deployment = next((d for d in entry.deployments if d.active), entry.deployments[0])
        return await self.backends[deployment.name].count_prompt_tokens(request)

    async def count_tokens(self, entry: ModelEntry, request: CoreRequest) -> int:
        """For ``count_tokens``: as exact as the backend can be, even at a cost (an upstream that
        counts for itself is asked); backends without such a count give their usual one."""
        deployment = next((d for d in entry.deployments if d.active), entry.deployments[0])
        backend = self.backends[deployment.name]
        exact = getattr(backend, "count_tokens", None)
        return int(await exact(request)) if exact is not None else await backend.count_prompt_tokens(request)

    def counts_exactly(self, entry: ModelEntry) -> bool:
        """Whether every backend the request may reach counts prompts with the model's own tokenizer
        (``exact_prompt_count = True``, as the embedded engine does): then that count bounds what
        it bills, and the hold need not assume a byte-level worst case."""
        return all(
            getattr(self.backends.get(d.name), "exact_prompt_count", False)
            for model in self.chain(entry)
            for d in model.deployments
        )

    async def open(self, entry: ModelEntry, request: CoreRequest, ctx: CallContext) -> Opened:
        now = time.monotonic()
        planned: list[tuple[ModelEntry, Deployment, int]] = []
        probes: list[tuple[ModelEntry, Deployment, int]] = []
        for model in self.chain(entry, request) if entry.fallbacks else (entry,):
            ready, broken = self._split(model, now)
            planned += [(model, d, d.max_retries) for d in ready]
            if broken:
                probes += [(model, d, 0) for d in broken]
        last_error: GatewrightError | None = None
        for model, deployment, retries in planned + probes if probes else planned:
            routed = request if model is entry else _retarget(request, model)
            try:
                first, rest = await self._attempts(deployment, routed, ctx, retries)
            except GatewrightError as error:
                if not can_fail_over(error):
                    raise
                log.warning("deployment %s failed, trying the next one: %s", deployment.name, error.message)
                last_error = error
                continue
            return Opened(model, deployment, first, rest)
        if last_error is not None:
            raise last_error
        raise UpstreamUnavailable(f"no deployment of `{entry.id}` is available")

    async def _attempts(
        self, deployment: Deployment, request: CoreRequest, ctx: CallContext, retries: int
    ) -> tuple[Event | None, AsyncIterator[Event]]:
        """(the first event or None for an empty stream, the stream after it)."""
        backend = self.backends[deployment.name]
        breaker = self.breaker(deployment)
        attempt = 0
        while True:
            ctx.usage = Usage()  # failed attempts are never billed
            stream = backend.stream(request, ctx)
            began = time.perf_counter()
            try:
                if tracing.ENABLED:
                    first = await _traced_first(stream, deployment, request, attempt)
                else:
                    first = await anext(stream)
            except StopAsyncIteration:
                breaker.record_success()
                record_upstream(deployment.name, time.perf_counter() - began)
                return None, stream
            except GatewrightError as error:
                await stream.aclose()  # type: ignore[attr-defined]
                record_upstream(deployment.name, time.perf_counter() - began, _failed_status(error))
                if not can_fail_over(error):
                    raise  # the request itself is at fault: no health signal
                breaker.record_failure(time.monotonic())
                delay = self._retry_delay(error, attempt, retries, breaker)
                if delay is None:
                    raise
                log.warning("deployment %s failed, retry in %.2fs: %s", deployment.name, delay, error.message)
                await asyncio.sleep(delay)
                attempt += 1
                continue
            except Exception as error:  # a backend bug must not look like a client error
                await stream.aclose()  # type: ignore[attr-defined]
                record_upstream(deployment.name, time.perf_counter() - began, 500)
                breaker.record_failure(time.monotonic())
                raise InternalError(f"backend {deployment.name} failed: {error!r}") from error
            breaker.record_success()
            record_upstream(deployment.name, time.perf_counter() - began)
            return first, stream

    # -- embeddings: the same order of attempts, one awaited call each -------------------------

    def embedder(self, deployment: Deployment) -> Embedder:
        backend = self.backends[deployment.name]
        if not isinstance(backend, Embedder):
            raise InternalError(f"deployment {deployment.name} ({deployment.backend}) cannot embed")
        return backend

    async def count_input_tokens(self, entry: ModelEntry, request: EmbeddingRequest) -> tuple[list[int], bool]:
        deployment = next((d for d in entry.deployments if d.active), entry.deployments[0])
        return await self.embedder(deployment).count_input_tokens(request)

    async def embed(
        self, entry: ModelEntry, request: EmbeddingRequest, ctx: CallContext
    ) -> tuple[ModelEntry, Deployment, Embeddings]:
        """(the model that answered, its deployment, the vectors). Fallbacks count only when they
        are embedding models too."""
        now = time.monotonic()
        first: list[tuple[ModelEntry, Deployment, int]] = []
        last: list[tuple[ModelEntry, Deployment, int]] = []
        for model in self.chain(entry):
            if model.type != entry.type:
                continue
            ready, broken = self._split(model, now)
            first += [(model, d, d.max_retries) for d in ready]
            last += [(model, d, 0) for d in broken]
        last_error: GatewrightError | None = None
        for model, deployment, retries in first + last:
            routed = request if model is entry else replace(request, model=model.id)
            try:
                return model, deployment, await self._embed_attempts(deployment, routed, ctx, retries)
            except GatewrightError as error:
                if not can_fail_over(error):
                    raise
                log.warning("deployment %s failed, trying the next one: %s", deployment.name, error.message)
                last_error = error
        if last_error is not None:
            raise last_error
        raise UpstreamUnavailable(f"no deployment of `{entry.id}` is available")

    async def _embed_attempts(
        self, deployment: Deployment, request: EmbeddingRequest, ctx: CallContext, retries: int
    ) -> Embeddings:
        embedder = self.embedder(deployment)
        breaker = self.breaker(deployment)
        attempt = 0
        while True:
            ctx.usage = Usage()  # failed attempts are never billed
            try:
                result = await embedder.embed(request, ctx)
            except GatewrightError as error:
                if not can_fail_over(error):
                    raise
                breaker.record_failure(time.monotonic())
                delay = self._retry_delay(error, attempt, retries, breaker)
                if delay is None:
                    raise
                log.warning("deployment %s failed, retry in %.2fs: %s", deployment.name, delay, error.message)
                await asyncio.sleep(delay)
                attempt += 1
                continue
            except Exception as error:  # a backend bug must not look like a client error
                breaker.record_failure(time.monotonic())
                raise InternalError(f"backend {deployment.name} failed: {error!r}") from error
            breaker.record_success()
            return result


async def _traced_first(
    stream: AsyncIterator[Event], deployment: Deployment, request: CoreRequest, attempt: int
) -> Event:
    """One attempt as a CLIENT span, until the first event: the backend's own calls run inside it,
    so the ``traceparent`` an upstream receives names this attempt."""
    attributes: tracing.Attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": request.model,
        "gen_ai.provider.name": deployment.backend,
        "gatewright.deployment": deployment.name,
        "gatewright.attempt": attempt,
    }
    with tracing.span(f"chat {request.model}", attributes, tracing.CLIENT) as span:
        try:
            return await anext(stream)
        except GatewrightError as error:
            span.set_attribute("error.type", str(_failed_status(error)))
            raise


def _failed_status(error: GatewrightError) -> int:
    """The status to count a failed attempt under: what the upstream said, else the gateway's."""
    return int(getattr(error, "upstream_status", 0) or error.status)


def can_serve(model: ModelEntry, request: CoreRequest) -> bool:
    """Whether a fallback has every capability the request needs. A reasoning hint is not a need
    (``_retarget`` drops it for a model that cannot reason); an explicit demand is."""
    caps = model.capabilities
    reasoning = request.reasoning
    needs = (
        (bool(request.tools) and request.tool_choice.mode != "none", caps.tools),
        (request.response_format.kind == "json_schema", caps.json_schema),
        (request.logprobs, caps.logprobs),
        (any(isinstance(p, ImagePart) for m in request.messages for p in m.parts), caps.vision),
        (reasoning is not None and reasoning.required and reasoning.effort != "none", caps.reasoning),
    )
    return all(has for needed, has in needs if needed)


def _retarget(request: CoreRequest, model: ModelEntry) -> CoreRequest:
    """The request as a fallback model gets it: its id, an output budget it can give, and no
    reasoning hint when it cannot reason."""
    changes: dict[str, object] = {"model": model.id}
    budget = request.sampling.max_tokens
    if budget is not None and budget > model.max_output:
        changes["sampling"] = replace(request.sampling, max_tokens=model.max_output)
    if request.reasoning is not None and not model.capabilities.reasoning:
        changes["reasoning"] = None
    return replace(request, **changes)  # type: ignore[arg-type]


def _weighted_shuffle(deployments: Sequence[Deployment]) -> list[Deployment]:
    # Efraimidis–Spirakis: sort by u^(1/w); each deployment comes first with probability w / Σw.
    return sorted(deployments, key=lambda d: random.random() ** (1.0 / d.weight), reverse=True)


async def _prepend(first: Event | None, rest: AsyncIterator[Event]) -> AsyncIterator[Event]:
    try:
        if first is not None:
            yield first
        async for event in rest:
            yield event
    finally:
        await rest.aclose()  # type: ignore[attr-defined]


__all__ = ["Breaker", "Opened", "RetryPolicy", "Router", "can_fail_over", "can_serve", "is_retryable"]
