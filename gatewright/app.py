"""The HTTP application: the routes of every dialect behind one front door (``api/front.py``).

The gateway behind it is built by the composition root (``wiring.open_gateway``) when the app
starts, and closed when it stops; this module registers the routes, the middleware list and the
error table, and what belongs to the HTTP server's own life (draining on a stop signal, metrics
shared by worker processes).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gatewright.api.anthropic import routes as anthropic_api
from gatewright.api.front import ErrorFormats, GatewayApp
from gatewright.api.health import draining_on_signal
from gatewright.api.health import routes as health_routes
from gatewright.api.http import JSONResponse
from gatewright.api.openai import routes as openai_api
from gatewright.api.platform import routes as platform_api
from gatewright.api.responses import routes as responses_api
from gatewright.api.tasks import routes as tasks_api
from gatewright.core import metrics as prometheus
from gatewright.core.catalog import Catalog
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


def routes() -> list[BaseRoute]:
    return [
        *openai_api.routes,
        *anthropic_api.routes,
        *responses_api.routes,
        *tasks_api.routes,
        *platform_api.routes,
        Route("/health", health, methods=["GET"]),
        *health_routes,
        Route("/metrics", metrics, methods=["GET"]),
    ]


def create_app(
    settings: Settings | None = None,
    *,
    catalog: Catalog | None = None,
    extra_routes: list[BaseRoute] | None = None,
) -> Starlette:
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
        routes=[*routes(), *(extra_routes or [])], errors=ERROR_FORMATS, middleware=MIDDLEWARE, lifespan=lifespan
    )
    app.state.settings = settings
    app.access.json = settings.log_format == "json"
    return app


def create_app_from_env() -> Starlette:
    """The factory each worker process calls (``gatewright serve --workers N``)."""
    settings = load_settings()  # checked by `gatewright serve` before the workers started
    configure_logging(settings, warn_unknown=False)
    return create_app(settings)
