"""The gateway in process: the real application (``create_app`` → ``wiring.open_gateway``, store,
ledger, limits, jobs) served through httpx's ASGI transport, with no process and no port.

Every in-process gateway of a test session runs on one event loop in a background thread (the
upstream backends' connection pools belong to the loop that made them). ``LoopTransport`` carries a
request from any client onto that loop, so the official SDKs' sync clients and async clients on the
test's own loop both reach the app: ``openai.OpenAI(http_client=gw.http)``. Answers arrive whole
(the ASGI transport buffers a stream), so tests of a client hanging up mid-stream, of workers,
restarts and replicas keep a real process (``tests/support/procs.py``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import logging
import threading
from collections.abc import Awaitable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anthropic
import httpx
import httpx2
import openai
from starlette.applications import Starlette
from starlette.middleware import Middleware

from gatewright.api.front import GatewayApp
from gatewright.app import create_app
from gatewright.settings import Settings
from gatewright.wiring import Services, bootstrap

T = TypeVar("T")
Answer = tuple[int, list[tuple[bytes, bytes]], bytes]  # status, headers, body

# The one set of fake models (tests/fixtures/catalogs/fake.toml) every fake-backend test shares.
FAKE_CATALOG = Path(__file__).resolve().parent.parent / "fixtures" / "catalogs" / "fake.toml"
BASE_URL = "http://gatewright.test"
TIMEOUT = 600.0  # a real model on two busy cores is slow; a hung app still fails the test


class _Loop:
    """The one background event loop the in-process apps run on."""

    _loop: asyncio.AbstractEventLoop | None = None
    _lock = threading.Lock()

    @classmethod
    def get(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="in-process-gateways", daemon=True).start()
                cls._loop = loop
            return cls._loop


def on_app_loop(coroutine: Awaitable[T], timeout: float = TIMEOUT) -> T:
    """Run a coroutine on the apps' loop from a test's thread and wait for its result."""
    return asyncio.run_coroutine_threadsafe(coroutine, _Loop.get()).result(timeout)  # type: ignore[arg-type]


class LoopTransport(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """httpx's ASGI transport, run on the apps' loop, for sync and async clients alike."""

    def __init__(self, app: Starlette) -> None:
        self.asgi = httpx.ASGITransport(app)

    async def serve(self, method: str, url: str, headers: list[tuple[bytes, bytes]], body: bytes) -> Answer:
        response = await self.asgi.handle_async_request(httpx.Request(method, url, headers=headers, content=body))
        return response.status_code, response.headers.raw, await response.aread()

    def answer(self, method: str, url: str, headers: list[tuple[bytes, bytes]], body: bytes) -> Answer:
        return on_app_loop(self.serve(method, url, headers, body))

    async def answer_async(self, method: str, url: str, headers: list[tuple[bytes, bytes]], body: bytes) -> Answer:
        future = asyncio.run_coroutine_threadsafe(self.serve(method, url, headers, body), _Loop.get())
        return await asyncio.wrap_future(future)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        status, headers, content = self.answer(request.method, str(request.url), request.headers.raw, request.read())
        return httpx.Response(status, headers=headers, content=content)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        status, headers, content = await self.answer_async(request.method, str(request.url), request.headers.raw, body)
        return httpx.Response(status, headers=headers, content=content)


class SdkLoopTransport(httpx2.BaseTransport, httpx2.AsyncBaseTransport):
    """The same, for the official SDKs, which are built on ``httpx2`` (and refuse httpx clients)."""

    def __init__(self, app: Starlette) -> None:
        self.inner = LoopTransport(app)

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        answer = self.inner.answer(request.method, str(request.url), request.headers.raw, request.read())
        return httpx2.Response(answer[0], headers=answer[1], content=answer[2])

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        body = await request.aread()
        answer = await self.inner.answer_async(request.method, str(request.url), request.headers.raw, body)
        return httpx2.Response(answer[0], headers=answer[1], content=answer[2])


@dataclass
class AppGateway:
    """A started in-process gateway, with the keys made on its first start."""

    app: GatewayApp
    settings: Settings
    api_key: str | None
    management_key: str | None
    access: io.StringIO
    url: str = BASE_URL
    operator_key: str | None = None  # the operator's credential (accounts, credits, codes)
    http: httpx.Client = field(init=False)
    sdk_http: httpx2.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(transport=LoopTransport(self.app), base_url=self.url, timeout=TIMEOUT)
        self.sdk_http = httpx2.Client(transport=SdkLoopTransport(self.app), timeout=TIMEOUT)

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services

    def log(self) -> str:
        """The access lines written so far (one per request, with its id)."""
        return self.access.getvalue()

    def async_http(self, **kwargs: Any) -> httpx.AsyncClient:
        """A client for async tests (on their own loop); close it, or use it in ``async with``."""
        return httpx.AsyncClient(transport=LoopTransport(self.app), base_url=self.url, timeout=TIMEOUT, **kwargs)

    def openai(self, key: str | None = None) -> openai.OpenAI:
        """The official SDK's client on this gateway (no retries: a test sees the first answer)."""
        key = key or self.api_key or "unused"
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, http_client=self.sdk_http, max_retries=0)

    def async_openai(self, key: str | None = None) -> openai.AsyncOpenAI:
        client = httpx2.AsyncClient(transport=SdkLoopTransport(self.app), timeout=TIMEOUT)
        key = key or self.api_key or "unused"
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key=key, http_client=client, max_retries=0)

    def anthropic(self, key: str | None = None) -> anthropic.Anthropic:
        key = key or self.api_key or "unused"
        return anthropic.Anthropic(base_url=self.url, api_key=key, http_client=self.sdk_http, max_retries=0)


async def _serve(app: Starlette, started: concurrent.futures.Future[None], stop: asyncio.Event) -> None:
    try:
        async with app.router.lifespan_context(app):
            started.set_result(None)
            await stop.wait()
    except BaseException as error:
        if not started.done():
            started.set_exception(error)
        raise


@contextmanager
def app_gateway(
    data_dir: Path, *, catalog: Path = FAKE_CATALOG, middleware: Sequence[Middleware] = (), **settings: Any
) -> Iterator[AppGateway]:
    """The gateway ``gatewright serve`` would run with these settings (``Settings`` field names), in
    this process: the store in ``data_dir`` is bootstrapped first, as ``serve`` does. ``middleware``
    is added with ``add_middleware`` before the app starts, as a deployment's own would be."""
    data_dir.mkdir(parents=True, exist_ok=True)
    config = Settings(data_dir=data_dir, catalog=catalog, **settings)
    first = on_app_loop(bootstrap(config)) if config.platform else None
    app = create_app(config)
    assert isinstance(app, GatewayApp)
    for layer in middleware:
        app.add_middleware(layer.cls, *layer.args, **layer.kwargs)
    access = io.StringIO()
    app.access.stream = access
    logging.getLogger("gatewright.access").setLevel(logging.INFO)  # what `serve` logs by default
    loop = _Loop.get()
    started: concurrent.futures.Future[None] = concurrent.futures.Future()
    stop = on_app_loop(_event())
    task = asyncio.run_coroutine_threadsafe(_serve(app, started, stop), loop)
    started.result(TIMEOUT)
    gateway = AppGateway(
        app,
        config,
        first.api_key.key if first else None,
        first.management_key.key if first else None,
        access,
        operator_key=first.operator_key if first else None,
    )
    try:
        yield gateway
    finally:
        gateway.http.close()
        gateway.sdk_http.close()
        loop.call_soon_threadsafe(stop.set)
        task.result(TIMEOUT)


async def _event() -> asyncio.Event:
    return asyncio.Event()  # made on the apps' loop, which it belongs to
