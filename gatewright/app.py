"""The application factory: everything is built here, from settings, and put on ``app.state``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gatewright.api.anthropic.routes import routes as anthropic_routes
from gatewright.api.front import Endpoint, GatewayApp
from gatewright.api.health import draining_on_signal
from gatewright.api.health import routes as health_routes
from gatewright.api.http import JSONResponse
from gatewright.api.openai.routes import routes as openai_routes
from gatewright.api.platform.routes import routes as platform_routes
from gatewright.api.responses.routes import routes as responses_routes
from gatewright.api.tasks.routes import routes as task_routes
from gatewright.api.tasks.service import open_jobs
from gatewright.backends.registry import REQUIRED_FIELDS, BackendEnv, build_backends
from gatewright.core import metrics as prometheus
from gatewright.core.backend import Backend
from gatewright.core.catalog import Catalog, load_catalog
from gatewright.core.pipeline import Gateway
from gatewright.core.routing import Router
from gatewright.core.stored import MemoryResponseStore, ResponseStore, sweep_forever
from gatewright.platform_setup import open_platform
from gatewright.settings import Settings, configure_logging, load_settings
from gatewright.store.responses import SqlResponseStore
from gatewright.telemetry import configure as configure_tracing

log = logging.getLogger("gatewright")


def hot_table(routes: list[BaseRoute]) -> dict[tuple[str, str], Endpoint]:
    """(method, path) → endpoint for the model-call routes, served without Starlette's stack."""
    table: dict[tuple[str, str], Endpoint] = {}
    for route in routes:
        if isinstance(route, Route) and "{" not in route.path:
            for method in route.methods or ():
                table[(method, route.path)] = route.endpoint
    return table


async def metrics(request: Request) -> Response:
    _sample(request.app.state.gateway.router)
    body, content_type = prometheus.render()
    return Response(body, media_type=content_type)


def _sample(router: Router) -> None:
    prometheus.sample(router.breakers.items(), router.backends.items())


# How often each worker copies its breaker and engine state into the shared gauges.
SAMPLE_EVERY = 2.0


async def _sample_forever(router: Router) -> None:
    """With several workers a scrape reaches one of them: the others' state must already be in
    the files. Also drops the gauges of workers that died without saying so."""
    while True:
        _sample(router)
        prometheus.forget_dead_workers()
        await asyncio.sleep(SAMPLE_EVERY)


async def health(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    models = {entry.id: ("active" if entry.active else "inactive") for entry in gateway.catalog}
    return JSONResponse({"status": "ok", "models": models})


def open_response_store(settings: Settings, engine: AsyncEngine | None, closers: list[Any]) -> ResponseStore:
    """Stored responses in the store when there is one, in memory for a bare proxy; swept for
    expired ones at a pace that suits the retention."""
    responses: ResponseStore = SqlResponseStore(engine) if engine is not None else MemoryResponseStore()
    every = min(600.0, max(1.0, settings.responses_retention_days * 86400 / 4))
    sweeper = asyncio.create_task(sweep_forever(responses, every))

    async def stop_sweeper() -> None:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper

    closers.append(stop_sweeper)
    return responses


def create_app(
    settings: Settings | None = None,
    *,
    catalog: Catalog | None = None,
    extra_routes: list[BaseRoute] | None = None,
) -> Starlette:
    settings = settings or Settings()
    catalog = catalog or load_catalog(settings.catalog, REQUIRED_FIELDS)
    backends: dict[str, Backend] = build_backends(catalog, BackendEnv(model_cache=settings.model_cache))
    router = Router(catalog, backends)
    gateway = Gateway(catalog, router)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        closers: list[Any] = []
        stack = contextlib.ExitStack()
        stack.enter_context(draining_on_signal(settings.drain_seconds))
        try:
            stop_tracing = configure_tracing()  # OTEL_* variables; nothing happens without them
            if stop_tracing is not None:
                closers.insert(0, stop_tracing)  # closed last: spans of the final requests are sent
            if prometheus.multiprocess_dir() is not None:
                sampler = asyncio.create_task(_sample_forever(router))
                closers.append(lambda: _stop(sampler))
            for backend in backends.values():
                if settings.load_models_at_start:
                    await backend.start()
            store = None
            if settings.platform:
                bundle = await open_platform(settings)
                gateway.platform = bundle.platform
                app.state.accounts = bundle.accounts
                app.state.settings = settings
                closers.append(bundle.close)
                store = app.state.store = bundle.engine
            # Task API jobs: after the platform (resumed tasks bill), closed before it (their holds settle).
            app.state.jobs = await open_jobs(settings, gateway, store)
            closers.append(app.state.jobs.close)
            app.state.response_store = open_response_store(settings, store, closers)
            yield
        finally:
            for close in reversed(closers):
                await close()
            for backend in backends.values():
                await backend.close()
            prometheus.mark_dead(os.getpid())
            stack.close()

    routes: list[BaseRoute] = [
        *openai_routes,
        *anthropic_routes,
        *responses_routes,
        *task_routes,
        *platform_routes,
        Route("/health", health, methods=["GET"]),
        *health_routes,
        Route("/metrics", metrics, methods=["GET"]),
        *(extra_routes or []),
    ]
    hot = hot_table([*openai_routes, *anthropic_routes, *responses_routes])
    app = GatewayApp(routes=routes, lifespan=lifespan, hot=hot)
    app.state.gateway = gateway
    app.state.settings = settings
    return app


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def create_app_from_env() -> Starlette:
    """The factory each worker process calls (``gatewright serve --workers N``)."""
    settings = load_settings()  # checked by `gatewright serve` before the workers started
    configure_logging(settings, warn_unknown=False)
    return create_app(settings)
