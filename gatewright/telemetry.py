"""Turning traces on from the standard OpenTelemetry variables (the SDK is imported only then).

Tracing is on when ``OTEL_SDK_DISABLED`` is not ``true`` and either ``OTEL_TRACES_EXPORTER`` names
an exporter (``otlp`` or ``console``) or an OTLP endpoint is set (``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``). Everything else the SDK reads itself: the exporter's
endpoint, headers, timeout and compression, ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``,
the sampler (``OTEL_TRACES_SAMPLER``, ``OTEL_TRACES_SAMPLER_ARG``) and the batch processor's
limits (``OTEL_BSP_*``). OTLP is sent over HTTP with protobuf (``http/protobuf``, the default
protocol of the specification); gRPC is not installed.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from gatewright.core import tracing

EXPORTERS = ("otlp", "console", "none")
PROTOCOLS = ("http/protobuf",)


def wanted(environ: Mapping[str, str]) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER")
    if exporter is not None:
        return exporter.strip().lower() not in ("", "none")
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def problems(environ: Mapping[str, str]) -> list[str]:
    """What is wrong with the OTEL_* variables gatewright acts on, one line each."""
    found = []
    exporter = environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if exporter not in EXPORTERS:
        found.append(f"OTEL_TRACES_EXPORTER={exporter!r}: allowed: {', '.join(EXPORTERS)}")
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = environ.get(name)
        if protocol is not None and protocol.strip() not in PROTOCOLS:
            found.append(f"{name}={protocol!r}: allowed: {', '.join(PROTOCOLS)} (gRPC is not installed)")
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        endpoint = environ.get(name)
        if endpoint and not endpoint.startswith(("http://", "https://")):
            found.append(f"{name}={endpoint!r}: allowed: an http:// or https:// URL")
    return found


def gatewright_version() -> str:
    try:
        return version("gatewright")
    except PackageNotFoundError:
        return "unknown"


def configure(environ: Mapping[str, str] | None = None, exporter: Any = None) -> Callable[[], Awaitable[None]] | None:
    """Start tracing if the environment asks for it (or ``exporter``, an SDK ``SpanExporter``, is
    given: tests). Returns what stops it (flushing spans not yet sent), or None when it stays off."""
    environ = os.environ if environ is None else environ
    if tracing.ENABLED or (exporter is None and not wanted(environ)):
        return None
    wrong = problems(environ)
    if wrong and exporter is None:
        raise ValueError("; ".join(wrong))
    from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    ours: dict[str, str] = {SERVICE_VERSION: gatewright_version()}
    if not environ.get("OTEL_SERVICE_NAME"):
        ours[SERVICE_NAME] = "gatewright"
    provider = TracerProvider(resource=Resource.create(ours))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    elif environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    tracing.enable(provider, gatewright_version())

    async def stop() -> None:
        tracing.disable()
        provider.shutdown()  # sends what is still batched

    return stop
