"""Prometheus metrics (``GET /metrics``): traffic, latency, tokens, credits, upstreams, the engine,
the ledger and refusals.

Label children are looked up once and kept, so recording costs a dict lookup and an add.

Several worker processes (``gatewright serve --workers N``) each count in memory-mapped files
under ``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's multiprocess mode, chosen when that
variable is set before this module is imported); a scrape, whichever worker answers it, adds up
every worker's files, those of workers that died included, so totals never jump or go back.
Gauges of state (breakers, engine queues) count live workers only: a worker's files go when it
does (``mark_dead``).

Names: Prometheus conventions (base units in the name, ``_total`` on counters) and, where the
OpenTelemetry GenAI semantic conventions name the same quantity, their name with dots made
underscores (``gen_ai.server.time_to_first_token`` → ``gen_ai_server_time_to_first_token_seconds``)
and their attribute as the label (``gen_ai_request_model``).
"""

from __future__ import annotations

import glob
import os
import time
from bisect import bisect_left
from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
REGISTRY = CollectorRegistry(auto_describe=True)

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# GenAI semantic conventions' recommended buckets for time to first token / per output token.
_TTFT = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
_TPOT = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
_RATE = (1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000)
_COMMIT = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)

REQUESTS = Counter(
    "gatewright_requests", "HTTP requests answered, by route and status", ("route", "status"), registry=REGISTRY
)
LATENCY = Histogram(
    "gatewright_request_seconds",
    "Time to the end of the answer, by route",
    ("route",),
    buckets=_SECONDS,
    registry=REGISTRY,
)
TOKENS = Counter(
    "gatewright_tokens",
    "Tokens of answered requests (abandoned streams: what was generated), by model and kind",
    ("model", "kind"),
    registry=REGISTRY,
)
CREDITS = Counter("gatewright_credits", "Credits charged, by model (2,000,000 = 1 USD)", ("model",), registry=REGISTRY)
TIME_TO_FIRST_TOKEN = Histogram(
    "gen_ai_server_time_to_first_token_seconds",
    "Time from the request reaching the gateway to its first generated token, by model",
    ("gen_ai_request_model",),
    buckets=_TTFT,
    registry=REGISTRY,
)
TIME_PER_OUTPUT_TOKEN = Histogram(
    "gen_ai_server_time_per_output_token_seconds",
    "Time per output token after the first, by model",
    ("gen_ai_request_model",),
    buckets=_TPOT,
    registry=REGISTRY,
)
TOKENS_PER_SECOND = Histogram(
    "gatewright_output_tokens_per_second",
    "Output tokens per second of a request after its first token, by model",
    ("model",),
    buckets=_RATE,
    registry=REGISTRY,
)
UPSTREAM_LATENCY = Histogram(
    "gatewright_upstream_first_event_seconds",
    "Time of one attempt at a deployment until its first event or its failure, by deployment and outcome",
    ("deployment", "outcome"),
    buckets=_SECONDS,
    registry=REGISTRY,
)
UPSTREAM_ERRORS = Counter(
    "gatewright_upstream_errors",
    "Failed attempts at a deployment, by deployment and status (the upstream's, or the gateway's for "
    "connection failures and timeouts)",
    ("deployment", "status"),
    registry=REGISTRY,
)
BREAKER_STATE = Gauge(
    "gatewright_deployment_breaker_state",
    "Circuit breaker of a deployment: 0 closed, 1 half-open (on probation), 2 open (skipped); the worst "
    "of the live workers",
    ("deployment",),
    multiprocess_mode="livemax",
    registry=REGISTRY,
)
ENGINE_QUEUED = Gauge(
    "gatewright_engine_queue_depth",
    "Requests waiting for an embedded engine, by deployment (all live workers)",
    ("deployment",),
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
ENGINE_ACTIVE = Gauge(
    "gatewright_engine_active_sequences",
    "Sequences an embedded engine is generating now, by deployment (all live workers)",
    ("deployment",),
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
LEDGER_COMMIT = Histogram(
    "gatewright_ledger_commit_seconds",
    "Duration of one ledger transaction (a group commit of reservations and settlements)",
    buckets=_COMMIT,
    registry=REGISTRY,
)
REFUSALS = Counter(
    "gatewright_refusals",
    "Requests refused before any work: 429 rate limits and 402 credit refusals, by status and reason",
    ("status", "reason"),
    registry=REGISTRY,
)


class _Tally:
    """The value cell of one labelled counter child, incremented directly.

    ``Counter.inc`` re-checks on every call that the child has its labels and that the amount is
    not negative; both hold by construction here (children made once by ``labels(...)``, amounts
    that are counts), and on the streaming path those checks were a measurable share of a
    request's CPU (docs/benchmarks.md). The cell is the library's own, so exposition, the
    multiprocess files and ``_created`` are unchanged. Pinned ``prometheus-client``: a test
    (tests/unit/test_metrics_fast.py) compares the result against the public API."""

    __slots__ = ("inc",)

    def __init__(self, child: Counter) -> None:
        self.inc = child._value.inc


class _Buckets:
    """The cells of one labelled histogram child, observed with a binary search instead of the
    library's linear scan and per-call label check; same cells, same exposition (see ``_Tally``)."""

    __slots__ = ("_add_sum", "_bounds", "_buckets")

    def __init__(self, child: Histogram) -> None:
        self._add_sum = child._sum.inc
        self._bounds = tuple(child._upper_bounds)
        self._buckets = tuple(cell.inc for cell in child._buckets)

    def observe(self, amount: float) -> None:
        if amount != amount:  # NaN: counted in the sum only, as the library does
            self._add_sum(amount)
            return
        self._add_sum(amount)
        self._buckets[bisect_left(self._bounds, amount)](1)


_requests: dict[tuple[str, int], tuple[_Tally, _Buckets]] = {}
_tokens: dict[str, tuple[_Tally, _Tally, _Tally, _Tally, _Tally]] = {}
_ttft: dict[str, _Buckets] = {}
_generation: dict[str, tuple[_Buckets, _Buckets]] = {}
_upstream: dict[tuple[str, str], _Buckets] = {}


def record_request(route: str, status: int, seconds: float) -> None:
    cells = _requests.get((route, status))
    if cells is None:
        cells = _requests[(route, status)] = (
            _Tally(REQUESTS.labels(route, str(status))),
            _Buckets(LATENCY.labels(route)),
        )
    cells[0].inc(1)
    cells[1].observe(seconds)


def _model_tallies(model: str) -> tuple[_Tally, _Tally, _Tally, _Tally, _Tally]:
    made = (
        _Tally(TOKENS.labels(model, "input")),
        _Tally(TOKENS.labels(model, "cached")),
        _Tally(TOKENS.labels(model, "output")),
        _Tally(TOKENS.labels(model, "reasoning")),
        _Tally(CREDITS.labels(model)),
    )
    _tokens[model] = made
    return made


def record_usage(model: str, input_tokens: int, cached: int, output: int, reasoning: int, credits: int) -> None:
    tallies = _tokens.get(model) or _model_tallies(model)
    # Only positive amounts count: a zero adds nothing, and a counter never goes down.
    if input_tokens > 0:
        tallies[0].inc(input_tokens)
    if cached > 0:
        tallies[1].inc(cached)
    if output > 0:
        tallies[2].inc(output)
    if reasoning > 0:
        tallies[3].inc(reasoning)
    if credits > 0:
        tallies[4].inc(credits)


def record_first_token(model: str, seconds: float) -> None:
    histogram = _ttft.get(model)
    if histogram is None:
        histogram = _ttft[model] = _Buckets(TIME_TO_FIRST_TOKEN.labels(model))
    histogram.observe(seconds)


def record_generation(model: str, output_tokens: int, seconds: float) -> None:
    """Speed of decoding: ``output_tokens`` generated in ``seconds`` counted from the first."""
    if output_tokens < 2 or seconds <= 0:
        return  # one token has no rate
    pair = _generation.get(model)
    if pair is None:
        pair = _generation[model] = (
            _Buckets(TIME_PER_OUTPUT_TOKEN.labels(model)),
            _Buckets(TOKENS_PER_SECOND.labels(model)),
        )
    per_token = seconds / (output_tokens - 1)
    pair[0].observe(per_token)
    pair[1].observe(1.0 / per_token)


def record_upstream(deployment: str, seconds: float, failed_status: int | None = None) -> None:
    """One attempt at a deployment: how long until it answered (or failed), and how it failed."""
    outcome = "ok" if failed_status is None else "error"
    histogram = _upstream.get((deployment, outcome))
    if histogram is None:
        histogram = _upstream[(deployment, outcome)] = _Buckets(UPSTREAM_LATENCY.labels(deployment, outcome))
    histogram.observe(seconds)
    if failed_status is not None:
        UPSTREAM_ERRORS.labels(deployment, str(failed_status)).inc()


def record_refusal(status: int, reason: str | None) -> None:
    REFUSALS.labels(str(status), reason or "unknown").inc()


def record_ledger_commit(seconds: float) -> None:
    LEDGER_COMMIT.observe(seconds)


# -- state read when scraped ----------------------------------------------------------------------


@runtime_checkable
class EngineStats(Protocol):
    """A backend with a local engine: how many requests wait for it and how many it is running."""

    def engine_stats(self) -> tuple[int, int]: ...


class BreakerView(Protocol):
    tripped: bool

    def available(self, now: float) -> bool: ...


def breaker_state(breaker: BreakerView, now: float) -> int:
    if not breaker.available(now):
        return 2
    return 1 if breaker.tripped else 0


def sample(breakers: Iterable[tuple[str, BreakerView]], backends: Iterable[tuple[str, object]]) -> None:
    """Copy this process's breaker and engine state into the gauges (before a scrape, and every
    few seconds in each worker so a scrape answered by another worker sees it too)."""
    now = time.monotonic()
    for name, breaker in breakers:
        BREAKER_STATE.labels(name).set(breaker_state(breaker, now))
    for name, backend in backends:
        if isinstance(backend, EngineStats):
            queued, active = backend.engine_stats()
            ENGINE_QUEUED.labels(name).set(queued)
            ENGINE_ACTIVE.labels(name).set(active)


# -- exposition -----------------------------------------------------------------------------------


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def render() -> tuple[bytes, str]:
    """The exposition text and its content type: every worker's series when there are several."""
    path = multiprocess_dir()
    if path is None:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path)  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST


def mark_dead(pid: int) -> None:
    """Drop a stopped worker's live gauges (its counters stay: totals must not go back)."""
    path = multiprocess_dir()
    if path is not None:
        multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


def forget_dead_workers() -> None:
    """Drop the live gauges of workers that are gone without saying so (killed, crashed)."""
    path = multiprocess_dir()
    if path is None:
        return
    for file in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        pid = int(file.rsplit("_", 1)[1][:-3])
        if not _alive(pid):
            multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prepare_multiprocess_dir(path: str, keep: int | None = None) -> None:
    """Empty (or make) the directory at the start of a run: files of an earlier run would be
    added to this one's totals. ``keep``: a process already counting there (its files stay)."""
    os.makedirs(path, exist_ok=True)
    for file in glob.glob(os.path.join(path, "*.db")):
        if keep is None or not file.endswith(f"_{keep}.db"):
            os.remove(file)
