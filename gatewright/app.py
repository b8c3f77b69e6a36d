"""The HTTP application: the routes of every dialect behind one front door (``api/front.py``).

The gateway behind it is built by the composition root (``wiring.open_gateway``) when the app
starts, and closed when it stops; this module only registers routes, the middleware list and the
error table.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gatewright.api.anthropic import routes as anthropic_api
from gatewright.api.front import ErrorFormats, GatewayApp
from gatewright.api.http import JSONResponse
from gatewright.api.openai import routes as openai_api
from gatewright.api.platform import routes as platform_api
from gatewright.api.tasks import routes as tasks_api
from gatewright.core.catalog import Catalog
from gatewright.core.metrics import REGISTRY
from gatewright.core.pipeline import Gateway
from gatewright.settings import Settings, configure_logging
from gatewright.wiring import load_catalog, open_gateway

# Which dialect answers an error the front door catches (a bug, an unknown path, a middleware's
# refusal): the route's own. Paths of no dialect below speak OpenAI's format, as the key and
# billing API does.
ERROR_FORMATS = ErrorFormats(
    default=openai_api.render_error,
    prefixes={
        "/v1/messages": anthropic_api.render_error,
        "/messages": anthropic_api.render_error,
        "/v1/tasks": tasks_api.render_error,
    },
    exact={"/v1": tasks_api.render_error},  # the task API's other address; "/v1/…" is not its
)

# Every request passes these, outermost first, inside the front door and before routing: a
# middleware listed here applies to every route. It may raise a GatewrightError to refuse a request;
# the front door answers it in the route's dialect.
MIDDLEWARE: list[Middleware] = []


async def metrics(request: Request) -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


async def health(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    models = {entry.id: ("active" if entry.active else "inactive") for entry in gateway.catalog}
    return JSONResponse({"status": "ok", "models": models})


def routes() -> list[BaseRoute]:
    return [
        *openai_api.routes,
        *anthropic_api.routes,
        *tasks_api.routes,
        *platform_api.routes,
        Route("/health", health, methods=["GET"]),
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
        async with open_gateway(settings, catalog) as services:
            app.state.services = services
            app.state.gateway = services.gateway
            app.state.jobs = services.jobs
            app.state.accounts = services.accounts
            yield

    app = GatewayApp(
        routes=[*routes(), *(extra_routes or [])], errors=ERROR_FORMATS, middleware=MIDDLEWARE, lifespan=lifespan
    )
    return app


def create_app_from_env() -> Starlette:
    """The factory each worker process calls (``gatewright serve --workers N``)."""
    settings = Settings()
    configure_logging(settings)
    return create_app(settings)
