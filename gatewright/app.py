"""The application factory: everything is built here, from settings, and put on ``app.state``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gatewright import __version__
from gatewright.api.anthropic.routes import operations as anthropic_operations
from gatewright.api.front import Endpoint, GatewayApp
from gatewright.api.http import JSONResponse
from gatewright.api.openai.routes import operations as openai_operations
from gatewright.api.openapi import Operation, document, routes_of
from gatewright.api.platform.routes import operations as platform_operations
from gatewright.api.responses.routes import operations as responses_operations
from gatewright.api.tasks.routes import operations as task_operations
from gatewright.api.tasks.service import open_jobs
from gatewright.backends.registry import REQUIRED_FIELDS, BackendEnv, build_backends
from gatewright.core.backend import Backend
from gatewright.core.catalog import Catalog, load_catalog
from gatewright.core.metrics import REGISTRY
from gatewright.core.pipeline import Gateway
from gatewright.core.routing import Router
from gatewright.core.stored import MemoryResponseStore, ResponseStore, sweep_forever
from gatewright.platform_setup import open_platform
from gatewright.settings import Settings, configure_logging
from gatewright.store.responses import SqlResponseStore

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
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


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


async def http_error(request: Request, error: Exception) -> Response:
    """Starlette's own 404 and 405 (no such route or method), as an error object, not plain text."""
    status = getattr(error, "status_code", 500)
    message = "Unknown route." if status == 404 else "Method not allowed on this route." if status == 405 else "Error."
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}
    return JSONResponse(body, status_code=status, headers=getattr(error, "headers", None))


async def openapi(request: Request) -> Response:
    return JSONResponse(request.app.state.openapi)


# Every public route, in one table: served by ``routes_of`` and documented by ``openapi.document``.
OPERATIONS: list[Operation] = [
    *openai_operations,
    *anthropic_operations,
    *responses_operations,
    *task_operations,
    *platform_operations,
    Operation("GET", "/health", health, "Liveness and the models' state.", "openai", security=(), tags=("ops",)),
    Operation("GET", "/metrics", metrics, "Prometheus metrics.", "openai", security=("metricsKey",), tags=("ops",)),
    Operation("GET", "/openapi.json", openapi, "This document.", "openai", security=(), tags=("ops",)),
]


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
        try:
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
                store = bundle.engine
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

    routes: list[BaseRoute] = [*routes_of(OPERATIONS), *(extra_routes or [])]
    hot = hot_table(routes_of([*openai_operations, *anthropic_operations, *responses_operations]))
    app = GatewayApp(routes=routes, lifespan=lifespan, hot=hot, exception_handlers={HTTPException: http_error})
    app.state.gateway = gateway
    app.state.settings = settings
    app.state.openapi = document(OPERATIONS, title="gatewright", version=__version__)
    return app


def create_app_from_env() -> Starlette:
    """The factory each worker process calls (``gatewright serve --workers N``)."""
    settings = Settings()
    configure_logging(settings)
    return create_app(settings)
