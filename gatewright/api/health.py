"""Health for load balancers and orchestrators.

``/health/live``: the process answers (restart it when this fails). ``/health/ready``: send it
traffic; it is false while the store is unreachable or behind the code's migrations, while an
embedded model is still loading, when no deployment of the default model is up (all inactive or
their circuit breakers open), and from the moment the process is told to stop (draining).
``/health`` stays as it was: the catalog's models and whether each is active.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gatewright.api.http import JSONResponse
from gatewright.core.pipeline import Gateway
from gatewright.store.db import schema_is_current

STORE_TIMEOUT = 2.0  # a store slower than this to answer SELECT 1 counts as unreachable


@dataclass
class Lifecycle:
    """Process-wide: set by the server's signal handler, read by the readiness check."""

    draining: bool = False


LIFECYCLE = Lifecycle()


@runtime_checkable
class Loadable(Protocol):
    """A backend whose model must be loaded into this process before it can serve."""

    @property
    def loaded(self) -> bool: ...


async def live(request: Request) -> Response:
    return JSONResponse({"status": "alive"})


async def ready(request: Request) -> Response:
    checks = await readiness(request.app.state)
    ok = all(passed for passed, _ in checks.values())
    body = {
        "status": "ready" if ok else "not ready",
        "checks": {name: {"ok": passed, "detail": detail} for name, (passed, detail) in checks.items()},
    }
    return JSONResponse(body, status_code=200 if ok else 503)


async def readiness(state: Any) -> dict[str, tuple[bool, str]]:
    checks: dict[str, tuple[bool, str]] = {}
    checks["draining"] = (not LIFECYCLE.draining, "stopping" if LIFECYCLE.draining else "serving")
    store: AsyncEngine | None = getattr(state, "store", None)
    if store is not None:
        checks["store"] = await _store(store)
    gateway: Gateway = state.gateway
    settings = state.settings
    if settings.load_models_at_start:
        pending = [name for name, b in gateway.router.backends.items() if isinstance(b, Loadable) and not b.loaded]
        checks["models_loaded"] = (not pending, f"loading: {', '.join(pending)}" if pending else "all loaded")
    checks["default_model"] = _default_model(gateway)
    return checks


async def _store(engine: AsyncEngine) -> tuple[bool, str]:
    try:
        current, detail = await asyncio.wait_for(schema_is_current(engine), STORE_TIMEOUT)
    except TimeoutError:
        return False, f"no answer within {STORE_TIMEOUT:g}s"
    except Exception as error:  # unreachable, refused, bad credentials: all mean "not ready"
        return False, f"unreachable: {type(error).__name__}"
    return current, detail


def _default_model(gateway: Gateway) -> tuple[bool, str]:
    name = gateway.catalog.default_model
    entry = gateway.catalog.find(name) if name else None
    if entry is None:
        return False, "the catalog has no default model"
    now = time.monotonic()
    up = [d.name for d in entry.deployments if d.active and gateway.router.breaker(d).available(now)]
    return bool(up), f"{entry.id}: {len(up)} of {len(entry.deployments)} deployments up"


@contextlib.contextmanager
def draining_on_signal(drain_seconds: float) -> Iterator[None]:
    """While the app runs: SIGTERM (or SIGINT) first marks the process draining, so readiness
    fails at once, then after ``drain_seconds`` hands the signal to the server's own handler,
    which stops accepting and lets requests in flight finish (uvicorn's graceful shutdown)."""
    LIFECYCLE.draining = False
    if threading.current_thread() is not threading.main_thread():
        yield  # signals can only be handled by the main thread (an app embedded in tests)
        return
    loop = asyncio.get_running_loop()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def on_signal(signum: int, frame: Any) -> None:
        first = not LIFECYCLE.draining
        LIFECYCLE.draining = True
        handler = previous[signal.Signals(signum)]
        if not callable(handler):
            return
        if first and drain_seconds > 0:
            loop.call_soon_threadsafe(loop.call_later, drain_seconds, handler, signum, None)
        else:
            handler(signum, frame)

    for sig in previous:
        signal.signal(sig, on_signal)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


routes = [Route("/health/live", live, methods=["GET"]), Route("/health/ready", ready, methods=["GET"])]
