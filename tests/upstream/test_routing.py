"""The router in process, over scripted backends: attempt order, retries, fallbacks, the breaker."""

from __future__ import annotations

import random
from collections import Counter, deque
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from gatewright.core.backend import CallContext
from gatewright.core.catalog import Catalog, Deployment, ModelEntry, parse_catalog
from gatewright.core.errors import (
    GatewrightError,
    InternalError,
    InvalidRequest,
    Overloaded,
    UpstreamError,
    UpstreamUnavailable,
)
from gatewright.core.events import ChoiceEnd, Event, TextDelta, UsageReport
from gatewright.core.routing import Breaker, RetryPolicy, Router, can_fail_over, is_retryable
from gatewright.core.types import (
    CoreRequest,
    ImagePart,
    Message,
    Reasoning,
    ResponseFormat,
    Sampling,
    TextPart,
    ToolChoice,
    ToolSpec,
    Usage,
)

REQUEST = CoreRequest(model="main", messages=(Message("user", (TextPart("hi"),)),), sampling=Sampling(max_tokens=50))


class Scripted:
    """A backend that fails or answers as told, one outcome per call, and records its calls."""

    def __init__(self, deployment: Deployment, entry: ModelEntry) -> None:
        self.deployment = deployment
        self.entry = entry
        self.outcomes: deque[BaseException | str] = deque()
        self.default: BaseException | str = "ok"
        self.calls: list[CoreRequest] = []
        self.busy = 0

    @property
    def in_flight(self) -> int:
        return self.busy

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def count_prompt_tokens(self, request: CoreRequest) -> int:
        return 3

    async def stream(self, request: CoreRequest, ctx: CallContext) -> AsyncIterator[Event]:
        self.calls.append(request)
        ctx.usage.output_tokens += 5  # a failing attempt that had started metering
        outcome = self.outcomes.popleft() if self.outcomes else self.default
        if isinstance(outcome, BaseException):
            raise outcome
        yield TextDelta(0, outcome)
        yield ChoiceEnd(0, "stop")
        yield UsageReport(Usage(3, 1))


def build(models: list[dict[str, Any]]) -> tuple[Catalog, Router, dict[str, Scripted]]:
    catalog = parse_catalog({"models": models})
    backends = {d.name: Scripted(d, e) for e in catalog for d in e.deployments}
    router = Router(catalog, backends, policy=RetryPolicy(base_delay=0.001, max_delay=0.002, max_retry_after=0.05))
    return catalog, router, backends


def model(model_id: str, **fields: Any) -> dict[str, Any]:
    """A model entry on the scripted backend; a field given as None is left out."""
    full = {"id": model_id, "context_window": 1000, "max_output": 100, "backend": "fake", **fields}
    return {k: v for k, v in full.items() if v is not None}


async def answer(router: Router, catalog: Catalog, name: str = "main") -> tuple[str, str, list[Event], CallContext]:
    ctx = CallContext("req")
    opened = await router.open(catalog.resolve(name), REQUEST, ctx)
    events = [event async for event in opened.events]
    return opened.entry.id, opened.deployment.name, events, ctx


def fail(status: int, retry_after: float | None = None) -> UpstreamError:
    return UpstreamError(f"failed with {status}", upstream_status=status, retry_after=retry_after)


async def test_retries_then_answers_with_a_fresh_meter() -> None:
    catalog, router, backends = build([model("main", max_retries=2)])
    backends["main"].outcomes.extend([fail(500), fail(429)])
    _, deployment, events, ctx = await answer(router, catalog)
    assert deployment == "main" and len(backends["main"].calls) == 3
    assert isinstance(events[0], TextDelta)
    assert ctx.usage.output_tokens == 5  # only the attempt that answered metered anything


async def test_client_errors_are_neither_retried_nor_routed_around() -> None:
    catalog, router, backends = build([model("main", max_retries=3, fallbacks=["spare"]), model("spare")])
    backends["main"].outcomes.append(InvalidRequest("bad temperature", param="temperature"))
    with pytest.raises(InvalidRequest):
        await answer(router, catalog)
    assert len(backends["main"].calls) == 1 and backends["spare"].calls == []
    assert router.breaker(backends["main"].deployment).failures == 0  # not a health signal


async def test_non_retryable_upstream_failure_fails_over_without_retrying() -> None:
    catalog, router, backends = build([model("main", max_retries=3, fallbacks=["spare"]), model("spare")])
    backends["main"].outcomes.append(fail(401))  # the gateway's own upstream key is wrong
    model_id, _, _, _ = await answer(router, catalog)
    assert model_id == "spare" and len(backends["main"].calls) == 1


async def test_overloaded_local_engine_fails_over_to_the_fallback() -> None:
    catalog, router, backends = build([model("main", fallbacks=["spare"]), model("spare")])
    backends["main"].outcomes.append(Overloaded("queue full"))
    model_id, _, _, _ = await answer(router, catalog)
    assert model_id == "spare"


async def test_fallback_gets_its_own_id_and_an_output_budget_it_can_give() -> None:
    models = [model("main", max_retries=0, fallbacks=["small"]), model("small", max_output=20)]
    catalog, router, backends = build(models)
    backends["main"].default = fail(503)
    await answer(router, catalog)
    sent = backends["small"].calls[0]
    assert sent.model == "small" and sent.sampling.max_tokens == 20


async def test_fallbacks_that_lack_a_needed_capability_are_skipped() -> None:
    caps = {"tools": True, "vision": True, "json_schema": True, "reasoning": True}
    models = [
        model("main", max_retries=0, fallbacks=["text-only", "able"], capabilities=caps),
        model("text-only"),
        model("able", capabilities=caps),
    ]
    catalog, router, backends = build(models)
    backends["main"].default = fail(503)
    needs = [
        {"tools": (ToolSpec("f", None, {"type": "object"}),), "tool_choice": ToolChoice("auto")},
        {"response_format": ResponseFormat("json_schema", {"type": "object"}, "x")},
        {"messages": (Message("user", (ImagePart("https://example.com/a.png"),)),)},
        {"reasoning": Reasoning("high", required=True)},
    ]
    for need in needs:
        opened = await router.open(catalog.resolve("main"), replace(REQUEST, **need), CallContext("req"))
        assert opened.entry.id == "able", need
    assert backends["text-only"].calls == []
    # A reasoning hint is no need: the text-only fallback serves it, without the hint.
    hinted = replace(REQUEST, reasoning=Reasoning("low"))
    assert [m.id for m in router.chain(catalog.resolve("main"), hinted)] == ["main", "text-only", "able"]
    opened = await router.open(catalog.resolve("main"), hinted, CallContext("req"))
    assert opened.entry.id == "text-only" and backends["text-only"].calls[-1].reasoning is None


async def test_a_long_retry_after_moves_on_instead_of_waiting() -> None:
    catalog, router, backends = build([model("main", max_retries=5, fallbacks=["spare"]), model("spare")])
    backends["main"].outcomes.append(fail(429, retry_after=60))
    model_id, _, _, _ = await answer(router, catalog)
    assert model_id == "spare" and len(backends["main"].calls) == 1


async def test_everything_failing_raises_the_last_upstream_error() -> None:
    catalog, router, backends = build([model("main", max_retries=1, fallbacks=["spare"]), model("spare")])
    backends["main"].default = fail(500)
    backends["spare"].default = fail(502)
    with pytest.raises(UpstreamError, match="failed with 502"):
        await answer(router, catalog)
    assert len(backends["main"].calls) == 2 and len(backends["spare"].calls) == 3


async def test_a_backend_bug_is_an_internal_error_not_a_client_error() -> None:
    catalog, router, backends = build([model("main")])
    backends["main"].outcomes.append(KeyError("oops"))
    with pytest.raises(InternalError, match="backend main failed"):
        await answer(router, catalog)


async def test_open_breakers_come_after_every_closed_deployment_of_the_chain() -> None:
    deployments = [{"name": "a", "backend": "fake", "max_retries": 0, "breaker_failures": 1, "breaker_cooldown": 60}]
    catalog, router, backends = build(
        [model("main", backend=None, deployments=deployments, fallbacks=["spare"]), model("spare", max_retries=0)]
    )
    backends["a"].outcomes.append(fail(500))
    assert (await answer(router, catalog))[0] == "spare"  # a failed: its breaker opens
    backends["spare"].default = fail(503)
    # spare fails too: a is tried last, once, as a probe, and closes its breaker by answering.
    model_id, deployment, _, _ = await answer(router, catalog)
    assert (model_id, deployment) == ("main", "a")
    assert len(backends["a"].calls) == 2
    assert router.breaker(backends["a"].deployment).available(0)


def test_breaker_opens_after_threshold_and_half_opens_after_cooldown() -> None:
    breaker = Breaker(threshold=3, cooldown=10)
    for now in (1.0, 2.0):
        breaker.record_failure(now)
        assert breaker.available(now)
    breaker.record_failure(3.0)
    assert not breaker.available(12.9) and breaker.available(13.0)
    breaker.record_failure(13.5)  # the probe after the cooldown failed: open again at once
    assert not breaker.available(20.0) and breaker.available(23.5)
    breaker.record_success()
    breaker.record_failure(24.0)
    assert breaker.available(24.0)  # closed again: back to counting


def test_retry_policy_honours_retry_after_and_backs_off() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=4.0, max_retry_after=20.0)
    assert policy.delay(0, 3.0) == 3.0
    assert policy.delay(0, 21.0) is None
    delays = [policy.delay(k, None) for k in range(6)]
    for k, delay in enumerate(delays):
        assert delay is not None and min(0.5 * 2**k, 4.0) / 2 <= delay <= min(0.5 * 2**k, 4.0)


def test_weighted_order_follows_the_weights() -> None:
    deployments = [{"name": n, "backend": "fake", "weight": w} for n, w in (("x", 6.0), ("y", 3.0), ("z", 1.0))]
    catalog, router, _ = build([model("main", backend=None, deployments=deployments)])
    random.seed(7)
    firsts = Counter(router.order(catalog.resolve("main"))[0].name for _ in range(5000))
    for name, share in (("x", 0.6), ("y", 0.3), ("z", 0.1)):
        assert abs(firsts[name] / 5000 - share) < 0.03


def test_least_busy_prefers_the_idle_deployment_and_keeps_catalog_order_on_ties() -> None:
    deployments = [{"name": n, "backend": "fake"} for n in ("p", "q", "r")]
    catalog, router, backends = build([model("main", backend=None, routing="least-busy", deployments=deployments)])
    entry = catalog.resolve("main")
    assert [d.name for d in router.order(entry)] == ["p", "q", "r"]
    backends["p"].busy, backends["q"].busy = 2, 1
    assert [d.name for d in router.order(entry)] == ["r", "q", "p"]


async def test_no_active_deployment_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GW_ROUTING_UNSET", raising=False)
    catalog, router, _ = build([model("main", api_key_env="GW_ROUTING_UNSET")])
    entry = catalog.find("main")
    assert entry is not None
    with pytest.raises(UpstreamUnavailable):
        await router.open(entry, REQUEST, CallContext("req"))


def test_errors_are_classified_for_routing() -> None:
    cases: list[tuple[GatewrightError, bool, bool]] = [
        (fail(429), True, True),
        (fail(529), True, True),
        (fail(404), False, True),
        (Overloaded("busy"), False, True),
        (InvalidRequest("bad"), False, False),
    ]
    for error, retry, over in cases:
        assert (is_retryable(error), can_fail_over(error)) == (retry, over), error
