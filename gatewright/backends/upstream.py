"""What every HTTP upstream shares: one pooled client, error mapping, SSE line parsing, and
estimates for upstreams that do not report usage."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import certifi
import orjson

from gatewright.backends import http1
from gatewright.backends.images import openai_image_tokens
from gatewright.core import errors, tracing
from gatewright.core.backend import CallContext
from gatewright.core.catalog import Deployment, ModelEntry
from gatewright.core.events import Event
from gatewright.core.types import CoreRequest, ImagePart, Usage

# An upstream's error ``code`` that means a specific caller error: rendered as ours.
UPSTREAM_CODES: dict[str, type[errors.InvalidRequest]] = {
    "context_length_exceeded": errors.ContextWindowExceeded,
}

# Upstream statuses that mean the request itself is wrong: the caller gets a 400 with the message.
CALLER_STATUSES = frozenset({400, 413, 422})


@functools.cache
def _tls() -> ssl.SSLContext:
    # Loading the CA bundle takes a quarter of a second here: once per process, not per client.
    return ssl.create_default_context(cafile=certifi.where())


@dataclass(frozen=True, slots=True)
class Answer:
    """A whole upstream answer."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class Streaming:
    """An upstream answer being received: status and headers now, the body as lines."""

    __slots__ = ("_response", "headers", "limit", "status")

    def __init__(self, response: http1.Response) -> None:
        self._response = response
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers
        self.limit: int | None = None  # the most bytes of body to take (an answer kept whole)

    async def read(self) -> bytes:
        return await self._response.read()

    def lines(self) -> AsyncIterator[str]:
        # Split by the client as bytes arrive, with no limit on a line's length (one SSE event
        # can carry a whole answer).
        return self._response.lines()

    def line_batches(self) -> AsyncIterator[deque[bytes]]:
        return self._response.line_batches(self.limit)


class Pool:
    """Pooled keep-alive HTTP/1.1 connections to one upstream (``backends.http1``).

    Not aiohttp (nor httpx) on this path: the upstream call is on every proxied request, and a
    purpose-built client on httptools costs a fraction of aiohttp's CPU per request and per
    streamed chunk (docs/benchmarks.md, "Issue 24"); httpx was 2–3 ms of CPU per request here."""

    def __init__(self, deployment: Deployment) -> None:
        self._total = deployment.timeout
        # A stream may last long; what must not last is a silence between two reads.
        self._silence = deployment.timeout
        self._client: http1.Pool | None = None
        self._connect_timeout = deployment.connect_timeout
        self._max_body = deployment.max_answer_bytes
        self._keepalive = deployment.keepalive

    @property
    def client(self) -> http1.Pool:
        if self._client is None:
            self._client = http1.Pool(self._connect_timeout, _tls(), self._max_body, self._keepalive)
        return self._client

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        client = self.client
        async with asyncio.timeout(self._total):
            response = await client.request(url, body, headers, self._silence)
            try:
                return Answer(response.status, response.headers, await response.read())
            finally:
                client.finish(response)

    @contextlib.asynccontextmanager
    async def stream(self, url: str, body: bytes, headers: Mapping[str, str]) -> AsyncIterator[Streaming]:
        client = self.client
        response = await client.request(url, body, headers, self._silence)
        try:
            yield Streaming(response)
        except BaseException:
            client.finish(response)  # abandoned or failed: closed, so the upstream stops generating
            raise
        client.finish(response, drain=True)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


# (event loop, base URL, timeouts, answer limit, keep-alive) → pool: a connection belongs to the loop
# that made it, and one process may run gateways on several loops (tests run apps in process beside
# their own).
_POOLS: dict[tuple[int, str, float, float, int, float], Pool] = {}


def client_for(deployment: Deployment) -> Pool:
    """One pool per (event loop, base URL, timeouts, answer limit, keep-alive), shared by deployments
    that agree on them. Called inside the event loop the pool belongs to (backends make theirs in
    ``start()``)."""
    loop = id(asyncio.get_running_loop())
    d = deployment
    key = (loop, d.base_url or "", d.timeout, d.connect_timeout, d.max_answer_bytes, d.keepalive)
    pool = _POOLS.get(key)
    if pool is None:
        pool = _POOLS[key] = Pool(deployment)
    return pool


async def close_clients() -> None:
    """Close the pools of the running event loop (those of other loops are theirs to close)."""
    loop = id(asyncio.get_running_loop())
    pools = [_POOLS.pop(key) for key in [k for k in _POOLS if k[0] == loop]]
    for pool in pools:
        await pool.close()


def retry_after(headers: Mapping[str, str]) -> float | None:
    """``retry-after-ms``, else ``retry-after`` in seconds or as an HTTP date."""
    value = headers.get("retry-after-ms")
    if value:
        with contextlib.suppress(ValueError):
            return max(float(value) / 1000, 0.0)
    value = headers.get("retry-after")
    if not value:
        return None
    with contextlib.suppress(ValueError):
        return max(float(value), 0.0)
    with contextlib.suppress(TypeError, ValueError):
        parsed = email.utils.parsedate_to_datetime(value)
        return max(parsed.timestamp() - time.time(), 0.0)
    return None


def error_fields(body: bytes) -> tuple[str, str | None, str | None]:
    """(message, param, code) of an upstream error body: OpenAI's, Anthropic's, or plain text."""
    with contextlib.suppress(orjson.JSONDecodeError, TypeError):
        data = orjson.loads(body)
        error = data.get("error", data) if isinstance(data, dict) else data
        if isinstance(error, dict):
            message = error.get("message") or error.get("detail") or orjson.dumps(error).decode()
            param, code = error.get("param"), error.get("code")
            return str(message), param if isinstance(param, str) else None, code if isinstance(code, str) else None
        return str(error), None, None
    return body.decode("utf-8", "replace")[:500] or "no body", None, None


def status_error(
    deployment: Deployment, status: int, headers: Mapping[str, str], body: bytes
) -> errors.GatewrightError:
    """An upstream's error answer, as the error our caller should see (message preserved)."""
    message, param, code = error_fields(body)
    text = f"upstream {deployment.name} answered {status}: {message}"
    if status in CALLER_STATUSES:
        cls = UPSTREAM_CODES.get(code or "", errors.InvalidRequest)
        return cls(text, param=param, code=code or "upstream_rejected_request")
    wait = retry_after(headers)
    if status == 429:
        return errors.UpstreamError(
            text, status=429, upstream_status=429, retry_after=wait, code="upstream_rate_limited"
        )
    # The gateway's own credentials or configuration failed upstream: not the caller's doing.
    return errors.UpstreamError(text, status=502, upstream_status=status, retry_after=wait, code=code)


def stream_error(deployment: Deployment, payload: Any, status: int = 502) -> errors.UpstreamError:
    """An error an upstream sent inside its stream (``{"error": ...}`` or the error object itself)."""
    message, _, code = error_fields(orjson.dumps(payload))
    return errors.UpstreamError(
        f"upstream {deployment.name} failed mid-stream: {message}", upstream_status=status, code=code
    )


@contextlib.contextmanager
def mapped_errors(deployment: Deployment) -> Iterator[None]:
    """Transport failures → core errors, so the router can retry or fall back."""
    try:
        yield
    except http1.AnswerTooLarge as error:  # a broken upstream's endless body: its fault, not a network's
        raise errors.UpstreamError(
            f"upstream {deployment.name} sent an answer too large to take ({error}; the deployment's max_answer_bytes)",
            code="upstream_answer_too_large",
        ) from None
    except TimeoutError as error:  # the client's silences and deadlines, and asyncio's
        raise errors.UpstreamTimeout(
            f"upstream {deployment.name} timed out after {deployment.timeout:g}s ({type(error).__name__})",
            upstream_status=504,
        ) from None
    except OSError as error:  # refused, reset, closed early, a name that does not resolve, bad HTTP
        raise errors.UpstreamUnavailable(
            f"upstream {deployment.name} unreachable or dropped the connection ({type(error).__name__})",
            upstream_status=503,
        ) from None


async def sse_data(response: Streaming) -> AsyncIterator[tuple[str | None, str]]:
    """(event name, data) pairs of an SSE body; comments and blank lines skipped. Lines come in
    the batches the network delivered them in, so a burst of events costs one wakeup."""
    event: str | None = None
    async for batch in response.line_batches():
        while batch:
            raw = batch.popleft()
            if raw.startswith(b"data:"):
                yield event, raw[5:].strip().decode()
            elif not raw or raw == b"\r":
                event = None
            elif raw.startswith(b"event:"):
                event = raw[6:].strip().decode()


def is_event_stream(headers: Mapping[str, str]) -> bool:
    return headers.get("content-type", "").lstrip().lower().startswith("text/event-stream")


def estimate_tokens(text: str) -> int:
    """~4 characters per token: used only where an upstream reports no usage of its own."""
    return max(1, (len(text) + 3) // 4)


# Per tool: the framing a chat template or provider wraps around each definition (a few tokens).
TOOL_FRAMING = 8


def estimate_prompt(
    request: CoreRequest, image_tokens: Callable[[ImagePart], int] = openai_image_tokens, tools_prompt: int = 0
) -> int:
    """The prompt's tokens as a provider would count them, approximately: text at ~4 characters a
    token, images by the provider's own rule (``image_tokens``), each tool's name, description and
    schema, and the tool-use instructions a provider adds when tools are given (``tools_prompt``)."""
    size = 0
    for message in request.messages:
        size += 4
        for part in message.parts:
            if isinstance(part, ImagePart):
                size += image_tokens(part)
                continue
            size += estimate_tokens(
                getattr(part, "text", "") or getattr(part, "content", "") or getattr(part, "arguments", "")
            )
    if request.tools:
        size += tools_prompt
    for tool in request.tools:
        schema = orjson.dumps(tool.parameters).decode()
        size += TOOL_FRAMING + estimate_tokens(tool.name) + estimate_tokens(schema)
        size += estimate_tokens(tool.description) if tool.description else 0
    return size


class HttpUpstream:
    """What backends that call an HTTP upstream share: the pooled client, the in-flight count,
    and one request path. Each upstream has one parser of its answers (``streamed``), and a
    non-streaming answer is the backend's events collected, as for every backend. Subclasses say
    where to send, how to encode a request and how to read the stream.

    ``whole_answers``: a caller who waits for the whole answer is answered from the upstream's
    whole answer (the request says ``stream: false``), read by ``whole``. A whole answer is one
    JSON body where a stream is a few dozen events: a fraction of the gateway's CPU and none of its
    per-event work (docs/benchmarks.md, "Whole answers, and one write a turn"). An upstream that
    streams anyway (``text/event-stream``) is read as a stream."""

    whole_answers: ClassVar[bool] = False

    path = ""  # appended to the deployment's base URL
    kind = "http"  # named in configuration errors
    # How this kind of provider counts what cannot be tokenized here (see ``estimate_prompt``).
    image_tokens: Callable[[ImagePart], int] = staticmethod(openai_image_tokens)
    # tool_choice mode → tokens of the instructions the provider adds when tools are given
    tools_prompt: ClassVar[Mapping[str, int]] = {}

    def __init__(self, deployment: Deployment, entry: ModelEntry, env: object = None) -> None:
        if not deployment.base_url:
            raise ValueError(f"deployment {deployment.name}: an {self.kind} backend needs base_url")
        self.deployment = deployment
        self.entry = entry
        self.url = deployment.base_url.rstrip("/") + self.path
        self.upstream_model = deployment.upstream_model or entry.id
        self.headers: dict[str, str] = {"content-type": "application/json", **deployment.headers}
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def start(self) -> None:
        client_for(self.deployment)  # the pool and its TLS setup now, not on the first request

    async def close(self) -> None:
        await close_clients()

    def estimate(self, request: CoreRequest) -> int:
        return estimate_prompt(request, self.image_tokens, self.tools_prompt.get(request.tool_choice.mode, 0))

    async def count_prompt_tokens(self, request: CoreRequest) -> int:
        """The estimate the gateway checks and holds credits by on every request (no round trip)."""
        return self.estimate(request)

    async def count_tokens(self, request: CoreRequest) -> int:
        """``count_tokens``: as exact as the provider allows (subclasses may ask the upstream)."""
        return self.estimate(request)

    def encode(self, request: CoreRequest) -> bytes:
        """The upstream request body: asking for a stream, or for a whole answer where
        ``whole_answers`` and the caller does not stream."""
        raise NotImplementedError

    def streamed(self, streaming: Streaming, ctx: CallContext, request: CoreRequest) -> AsyncIterator[Event]:
        raise NotImplementedError

    def whole(self, body: bytes, ctx: CallContext, request: CoreRequest) -> AsyncIterator[Event]:
        """The events of a whole (non-streamed) answer; only where ``whole_answers``."""
        raise NotImplementedError

    async def stream(self, request: CoreRequest, ctx: CallContext) -> AsyncIterator[Event]:
        body = self.encode(request)
        client = client_for(self.deployment)
        # The meter an abandoned answer is billed from until the upstream's own count arrives.
        prompt = ctx.prompt_tokens if ctx.prompt_tokens is not None else self.estimate(request)
        ctx.usage = Usage(input_tokens=prompt, estimated=True)
        headers = self.headers
        if tracing.ENABLED:  # the upstream continues our trace (this attempt's span)
            headers = dict(headers)
            tracing.inject(headers)
        self._in_flight += 1
        try:
            with mapped_errors(self.deployment):
                async with client.stream(self.url, body, headers) as streaming:
                    if streaming.status >= 400:
                        raw = await streaming.read()
                        raise status_error(self.deployment, streaming.status, streaming.headers, raw)
                    if not request.stream:  # collected whole: as bounded as an answer read whole
                        streaming.limit = self.deployment.max_answer_bytes
                    if request.stream or not self.whole_answers or is_event_stream(streaming.headers):
                        events = self.streamed(streaming, ctx, request)
                    else:
                        ctx.whole = True
                        events = self.whole(await streaming.read(), ctx, request)
                    async for event in events:
                        yield event
        finally:
            self._in_flight -= 1
