"""The HTTP application: the routes of every dialect behind one front door (``api/front.py``).

The gateway behind it is built by the composition root (``wiring.open_gateway``) when the app
starts, and closed when it stops; this module registers the routes, the middleware list and the
error table, and what belongs to the HTTP server's own life (draining on a stop signal, metrics
shared by worker processes).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import os
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from gatewright import __version__
from gatewright.api import health as health_api
from gatewright.api.anthropic import routes as anthropic_api
from gatewright.api.exposure import exposure_middleware
from gatewright.api.front import Endpoint, ErrorFormats, GatewayApp
from gatewright.api.health import draining_on_signal
from gatewright.api.http import JSONResponse, bearer
from gatewright.api.openai import routes as openai_api
from gatewright.api.openapi import Operation, document, routes_of
from gatewright.api.platform import admin as admin_api
from gatewright.api.platform import routes as platform_api
from gatewright.api.responses import routes as responses_api
from gatewright.api.tasks import routes as tasks_api
from gatewright.console import routes as console
from gatewright.core import metrics as prometheus
from gatewright.core.catalog import Catalog
from gatewright.core.errors import Unauthorized
from gatewright.core.pipeline import Gateway
from gatewright.core.routing import Router
from gatewright.settings import Settings, configure_logging, load_settings
from gatewright.telemetry import configure as configure_tracing
from gatewright.wiring import load_catalog, open_gateway

# Which dialect answers an error the front door catches (a bug, an unknown path, a middleware's
# refusal): the route's own. Paths of no dialect below speak OpenAI's format, as the key and
# billing API does.
ERROR_FORMATS = ErrorFormats(
    default=openai_api.render_error,
    prefixes={
        "/v1/messages": anthropic_api.render_error,
        "/messages": anthropic_api.render_error,
        "/v1/responses": responses_api.render_error,
        "/responses": responses_api.render_error,
        "/v1/tasks": tasks_api.render_error,
    },
    exact={"/v1": tasks_api.render_error},  # the task API's other address; "/v1/…" is not its
)

# Every request passes these, outermost first, inside the front door and before routing: a
# middleware listed here applies to every route. It may raise a GatewrightError to refuse a request;
# the front door answers it in the route's dialect.
MIDDLEWARE: list[Middleware] = []


async def metrics(request: Request) -> Response:
    required = request.app.state.settings.metrics_key
    if required and not hmac.compare_digest((bearer(request) or "").encode(), required.encode()):
        raise Unauthorized("GET /metrics needs the metrics key: 'Authorization: Bearer <key>'.", code="invalid_api_key")
    _sample(request.app.state.gateway.router)
    body, content_type = prometheus.render()
    return Response(body, media_type=content_type)


def _sample(router: Router) -> None:
    # Every active deployment has a breaker series from the start, not only those used so far.
    breakers = [(d.name, router.breaker(d)) for entry in router.catalog for d in entry.deployments if d.active]
    prometheus.sample(breakers, router.backends.items())


# How often each worker copies its breaker and engine state into the shared gauges.
SAMPLE_EVERY = 2.0


async def _sample_forever(router: Router) -> None:
    """With several workers a scrape reaches one of them: the others' state must already be in
    the files. Also drops the gauges of workers that died without saying so."""
    while True:
        _sample(router)
        prometheus.forget_dead_workers()
        await asyncio.sleep(SAMPLE_EVERY)


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def health(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    models = {entry.id: ("active" if entry.active else "inactive") for entry in gateway.catalog}
    return JSONResponse({"status": "ok", "models": models})


async def openapi(request: Request) -> Response:
    return JSONResponse(request.app.state.openapi)


def _ops(method: str, path: str, endpoint: Endpoint, summary: str, **kwargs: Any) -> Operation:
    return Operation(method, path, endpoint, summary, "openai", security=(), tags=("ops",), **kwargs)


# Every public route, in one table: served by ``routes_of`` and documented by ``openapi.document``
# (``GET /openapi.json``); a dialect adds its routes by adding its ``operations`` here.
OPERATIONS: list[Operation] = [
    *openai_api.operations,
    *anthropic_api.operations,
    *responses_api.operations,
    *tasks_api.operations,
    *platform_api.operations,
    *admin_api.operations,
    *console.operations,
    _ops("GET", "/health", health, "Liveness and the models' state."),
    _ops("GET", "/health/live", health_api.live, "Liveness: the process answers."),
    _ops("GET", "/health/ready", health_api.ready, "Readiness: store, default model, not draining."),
    Operation("GET", "/metrics", metrics, "Prometheus metrics.", "openai", security=("metricsKey",), tags=("ops",)),
    _ops("GET", "/openapi.json", openapi, "This document."),
]


def routes() -> list[BaseRoute]:
    return routes_of(OPERATIONS)


# Young-generation collections start after this many more container allocations than frees (the
# default, 700, is crossed by the objects that concurrent requests hold alive at once; see
# ``settle_heap``).
YOUNG_GC_THRESHOLD = 10_000


def settle_heap() -> None:
    """Once the gateway is up: the objects of start-up (modules, the catalog, the model tables)
    leave the collector's view (``gc.freeze``), so a full collection no longer walks them all, and
    young collections wait for more allocations. Under load the default settings spent 6–7 % of
    the server's CPU in the collector (``docs/benchmarks.md``); requests make almost no cyclic
    garbage, so collections that rare keep memory where it was."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GC_THRESHOLD, older, oldest)


def create_app(
    settings: Settings | None = None,
    *,
    catalog: Catalog | None = None,
    extra_routes: list[BaseRoute] | None = None,
    serving: bool = False,
) -> Starlette:
    """``serving``: this process is the server (``gatewright serve``, a worker of it): once started,
    it settles its heap (``settle_heap``); an app built inside another program leaves its collector
    alone."""
    settings = settings or Settings()
    catalog = catalog or load_catalog(settings)  # now: a bad catalog fails here, not at first request

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        with draining_on_signal(settings.drain_seconds):
            stop_tracing = configure_tracing()  # OTEL_* variables; nothing happens without them
            try:
                async with open_gateway(settings, catalog) as services:
                    app.state.services = services
                    app.state.gateway = services.gateway
                    app.state.jobs = services.jobs
                    app.state.accounts = services.accounts
                    app.state.store = services.platform.store if services.platform else None
                    app.state.response_store = services.responses
                    app.state.console_sessions = services.console_sessions
                    if serving:
                        settle_heap()
                    sampler = None
                    if prometheus.multiprocess_dir() is not None:
                        sampler = asyncio.create_task(_sample_forever(services.gateway.router))
                    try:
                        yield
                    finally:
                        if sampler is not None:
                            await _stop(sampler)
            finally:
                prometheus.mark_dead(os.getpid())
                if stop_tracing is not None:  # after everything: the final requests' spans are sent
                    await stop_tracing()

    app = GatewayApp(
        routes=[*routes(), *(extra_routes or [])],
        errors=ERROR_FORMATS,
        middleware=[*exposure_middleware(settings.cors_origins, settings.max_body_bytes), *MIDDLEWARE],
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.openapi = document(OPERATIONS, title="gatewright", version=__version__)
    app.access.json = settings.log_format == "json"
    return app


def create_app_from_env() -> Starlette:
    """The factory each worker process calls (``gatewright serve --workers N``)."""
    settings = load_settings()  # checked by `gatewright serve` before the workers started
    configure_logging(settings, warn_unknown=False)
    return create_app(settings, serving=True)
