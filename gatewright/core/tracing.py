"""OpenTelemetry traces of requests: what the rest of the code calls (API only, no SDK).

Off unless the standard ``OTEL_*`` variables ask for it (``gatewright.telemetry.configure``). Off
means free: every call site checks ``ENABLED`` (a module attribute) before doing anything, so no
span, context or attribute object is made on the request path.

One request is one span made by the front door (kind SERVER, continuing a caller's
``traceparent``), named ``<method> <route>``, that collects the GenAI semantic-convention attributes
(``gen_ai.operation.name``, ``gen_ai.request.model``, ``gen_ai.usage.*``…) and gatewright's own
(``gatewright.*``: dialect, key prefix, account, credits, outcome). Its children: the credit
reservation, each upstream attempt (kind CLIENT; its context is what upstreams receive as
``traceparent``), the embedded engine's queue wait, prefill and decode, and the settlement.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

CLIENT = SpanKind.CLIENT
ENABLED = False
_tracer: Tracer = trace.NoOpTracer()

Attributes = Mapping[str, str | int | float | bool]


def enable(provider: trace.TracerProvider, version: str) -> None:
    global ENABLED, _tracer
    _tracer = provider.get_tracer("gatewright", version)
    ENABLED = True


def disable() -> None:
    global ENABLED, _tracer
    ENABLED = False
    _tracer = trace.NoOpTracer()


def start_request(name: str, headers: Mapping[str, str], attributes: Attributes) -> tuple[Span, object]:
    """The request's span, current from now on in this task (and tasks it starts); ``headers``
    may carry the caller's ``traceparent``. Returns the span and the token ``end_request`` needs."""
    parent = propagate.extract(headers)
    span = _tracer.start_span(name, context=parent, kind=SpanKind.SERVER, attributes=attributes)
    token = otel_context.attach(trace.set_span_in_context(span, parent))
    return span, token


def end_request(span: Span, token: object, status: int) -> None:
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))
    span.end()
    otel_context.detach(token)  # type: ignore[arg-type]


def annotate(attributes: Attributes) -> None:
    """Add attributes to the span current here (the request's, from the pipeline)."""
    trace.get_current_span().set_attributes(attributes)


@contextlib.contextmanager
def span(name: str, attributes: Attributes, kind: SpanKind = SpanKind.INTERNAL) -> Iterator[Span]:
    """A child span of the current one around a block; an exception marks it failed."""
    with _tracer.start_as_current_span(name, kind=kind, attributes=attributes) as current:
        yield current


def start_child(name: str, attributes: Attributes) -> Span:
    """A child span ended by the caller later (``Span.end``): work that finishes after the block
    that started it (a settlement committed behind the response)."""
    return _tracer.start_span(name, attributes=attributes)


def record_span(name: str, start: float, end: float, attributes: Attributes) -> None:
    """A finished child span from two ``time.perf_counter()`` readings: phases measured elsewhere
    (the engine's thread) and reported when they are over."""
    now_ns, now = time.time_ns(), time.perf_counter()
    started = now_ns - int((now - start) * 1e9)
    ended = now_ns - int((now - end) * 1e9)
    _tracer.start_span(name, attributes=attributes, start_time=started).end(end_time=ended)


def inject(headers: MutableMapping[str, str]) -> None:
    """Put the current span's context into outgoing headers (``traceparent``, ``tracestate``)."""
    propagate.inject(headers)


def failed(span_: Span, error: BaseException) -> None:
    span_.record_exception(error)
    span_.set_status(Status(StatusCode.ERROR, type(error).__name__))


def current() -> Any:
    return trace.get_current_span()
