"""What every HTTP upstream shares: one pooled client, error mapping, SSE line parsing, and
estimates for upstreams that do not report usage."""

from __future__ import annotations

import contextlib
import email.utils
import functools
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson

from gatewright.core import errors
from gatewright.core.catalog import Deployment
from gatewright.core.types import CoreRequest

_CLIENTS: dict[tuple[str, float, float], httpx.AsyncClient] = {}

# An upstream's error ``code`` that means a specific caller error: rendered as ours.
UPSTREAM_CODES: dict[str, type[errors.InvalidRequest]] = {
    "context_length_exceeded": errors.ContextWindowExceeded,
}

# Upstream statuses that mean the request itself is wrong: the caller gets a 400 with the message.
CALLER_STATUSES = frozenset({400, 413, 422})


@functools.cache
def _tls() -> ssl.SSLContext:
    # Loading the CA bundle takes a quarter of a second here: once per process, not per client.
    return httpx.create_ssl_context()


def client_for(deployment: Deployment) -> httpx.AsyncClient:
    """One pooled client per (base URL, timeouts), shared by deployments that agree on them.

    Backends make theirs in ``start()``, so the first request does not pay for it."""
    key = (deployment.base_url or "", deployment.timeout, deployment.connect_timeout)
    client = _CLIENTS.get(key)
    if client is None or client.is_closed:
        client = httpx.AsyncClient(
            timeout=httpx.Timeout(deployment.timeout, connect=deployment.connect_timeout),
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200),
            verify=_tls(),
        )
        _CLIENTS[key] = client
    return client


async def close_clients() -> None:
    clients = list(_CLIENTS.values())
    _CLIENTS.clear()
    for client in clients:
        await client.aclose()


def retry_after(headers: httpx.Headers) -> float | None:
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


def status_error(deployment: Deployment, status: int, headers: httpx.Headers, body: bytes) -> errors.GatewrightError:
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
    except httpx.TimeoutException as error:
        raise errors.UpstreamTimeout(
            f"upstream {deployment.name} timed out after {deployment.timeout:g}s ({type(error).__name__})",
            upstream_status=504,
        ) from None
    except httpx.TransportError as error:
        raise errors.UpstreamUnavailable(
            f"upstream {deployment.name} unreachable or dropped the connection ({type(error).__name__})",
            upstream_status=503,
        ) from None


async def sse_data(response: httpx.Response) -> AsyncIterator[tuple[str | None, str]]:
    """(event name, data) pairs of an SSE body; comments and blank lines skipped."""
    event: str | None = None
    async for line in response.aiter_lines():
        if not line:
            event = None
        elif line.startswith("data:"):
            yield event, line[5:].lstrip()
        elif line.startswith("event:"):
            event = line[6:].strip()


def estimate_tokens(text: str) -> int:
    """~4 characters per token: used only where an upstream reports no usage of its own."""
    return max(1, (len(text) + 3) // 4)


def estimate_prompt(request: CoreRequest) -> int:
    size = 0
    for message in request.messages:
        size += 4
        for part in message.parts:
            size += estimate_tokens(
                getattr(part, "text", "") or getattr(part, "content", "") or getattr(part, "arguments", "")
            )
    for tool in request.tools:
        size += estimate_tokens(orjson.dumps(tool.parameters).decode()) + estimate_tokens(tool.description or "")
    return size
