"""Prometheus metrics (``GET /metrics``): traffic, latency, tokens and credits.

Label children are looked up once and kept, so recording costs a dict lookup and an add.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "gatewright_requests", "HTTP requests answered, by route and status", ("route", "status"), registry=REGISTRY
)
LATENCY = Histogram(
    "gatewright_request_seconds",
    "Time to the end of the answer, by route",
    ("route",),
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
    registry=REGISTRY,
)
TOKENS = Counter(
    "gatewright_tokens",
    "Tokens of answered requests (abandoned streams: what was generated), by model and kind",
    ("model", "kind"),
    registry=REGISTRY,
)
CREDITS = Counter("gatewright_credits", "Credits charged, by model (2,000,000 = 1 USD)", ("model",), registry=REGISTRY)

_requests: dict[tuple[str, int], Counter] = {}
_latency: dict[str, Histogram] = {}
_tokens: dict[tuple[str, str], Counter] = {}
_credits: dict[str, Counter] = {}


def record_request(route: str, status: int, seconds: float) -> None:
    counter = _requests.get((route, status))
    if counter is None:
        counter = _requests[(route, status)] = REQUESTS.labels(route, str(status))
    counter.inc()
    histogram = _latency.get(route)
    if histogram is None:
        histogram = _latency[route] = LATENCY.labels(route)
    histogram.observe(seconds)


def record_usage(model: str, input_tokens: int, cached: int, output: int, reasoning: int, credits: int) -> None:
    for kind, count in (("input", input_tokens), ("cached", cached), ("output", output), ("reasoning", reasoning)):
        if count:
            counter = _tokens.get((model, kind))
            if counter is None:
                counter = _tokens[(model, kind)] = TOKENS.labels(model, kind)
            counter.inc(count)
    if credits:
        charged = _credits.get(model)
        if charged is None:
            charged = _credits[model] = CREDITS.labels(model)
        charged.inc(credits)
