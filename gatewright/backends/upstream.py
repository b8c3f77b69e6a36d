"""What every HTTP upstream shares: one pooled client, error mapping, SSE line parsing, and
estimates for upstreams that do not report usage."""

from __future__ import annotations

import contextlib
import email.utils
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson

from gatewright.core import errors
from gatewright.core.catalog import Deployment
from gatewright.core.types import CoreRequest

_CLIENTS: dict[tuple[str, float, float], httpx.AsyncClient] = {}


def client_for(deployment: Deployment) -> httpx.AsyncClient:
    """One pooled client per (base URL, timeouts), shared by deployments that agree on them."""
    key = (deployment.base_url or "", deployment.timeout, deployment.connect_timeout)
    client = _CLIENTS.get(key)
    if client is None or client.is_closed:
        client = httpx.AsyncClient(
            timeout=httpx.Timeout(deployment.timeout, connect=deployment.connect_timeout),
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200),
        )
        _CLIENTS[key] = client
    return client


async def close_clients() -> None:
    clients = list(_CLIENTS.values())
    _CLIENTS.clear()
    for client in clients:
        await client.aclose()


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after-ms")
    if value:
        with contextlib.suppress(ValueError):
            return float(value) / 1000
    value = response.headers.get("retry-after")
    if not value:
        return None
    with contextlib.suppress(ValueError):
        return float(value)
    parsed = email.utils.parsedate_to_datetime(value) if value else None
    return max(parsed.timestamp() - time.time(), 0.0) if parsed else None


def _message_of(body: bytes) -> str:
    with contextlib.suppress(orjson.JSONDecodeError, TypeError, AttributeError):
        data = orjson.loads(body)
        error = data.get("error", data) if isinstance(data, dict) else data
        if isinstance(error, dict):
            return str(error.get("message") or error.get("detail") or error)
        return str(error)
    return body.decode("utf-8", "replace")[:500] or "no body"


def status_error(deployment: Deployment, response: httpx.Response, body: bytes) -> errors.GatewrightError:
    """An upstream's error answer, as the error our caller should see (message preserved)."""
    status = response.status_code
    message = f"upstream {deployment.name} answered {status}: {_message_of(body)}"
    if status in (400, 413, 422):
        return errors.InvalidRequest(message, code="upstream_rejected_request")
    if status == 429:
        return errors.UpstreamError(
            message, status=429, upstream_status=429, retry_after=_retry_after(response), code="upstream_rate_limited"
        )
    return errors.UpstreamError(message, status=502, upstream_status=status, retry_after=_retry_after(response))


@contextlib.contextmanager
def mapped_errors(deployment: Deployment) -> Iterator[None]:
    """Transport failures → core errors, so the router can retry or fall back."""
    try:
        yield
    except httpx.TimeoutException as error:
        raise errors.UpstreamTimeout(
            f"upstream {deployment.name} timed out ({type(error).__name__})", upstream_status=504
        ) from None
    except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as error:
        raise errors.UpstreamUnavailable(
            f"upstream {deployment.name} unreachable or dropped the connection ({type(error).__name__})",
            upstream_status=503,
        ) from None


async def sse_data(response: httpx.Response) -> AsyncIterator[tuple[str | None, bytes]]:
    """(event name, data) pairs of an SSE body; comments and blank lines skipped."""
    event: str | None = None
    async for line in response.aiter_lines():
        if not line:
            event = None
            continue
        if line.startswith("data:"):
            yield event, line[5:].lstrip().encode()
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


def bearer_headers(deployment: Deployment) -> dict[str, Any]:
    headers = {"content-type": "application/json", **deployment.headers}
    key = deployment.api_key
    if key:
        headers["authorization"] = f"Bearer {key}"
    return headers
