"""Signed webhook deliveries: POST a body, retry with bounded exponential backoff until a 2xx.

Every POST carries

    x-gatewright-timestamp: <unix seconds when this attempt was sent>
    x-gatewright-signature: v1=<hex HMAC-SHA256(secret, "<timestamp>." + raw body bytes)>
    x-gatewright-delivery:  <stable id of the delivered item, the same on every retry>
    x-gatewright-attempt:   <1, 2, 3 ...>

so a receiver recomputes the HMAC over the timestamp and the exact bytes it got, compares in
constant time, refuses stale timestamps (replays) and de-duplicates by the delivery id. The secret is
``settings.webhook_secret`` or, when unset, one generated once into the data directory.

It lives outside ``core`` (which holds no HTTP client): jobs reach it through
``core.webhooks.WebhookDelivery``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from gatewright.core.clock import iso, utcnow
from gatewright.core.webhooks import Attempt, Recorder
from gatewright.outbound.guard import AddressGuard, Refused, Unresolved

log = logging.getLogger("gatewright.webhooks")

TIMESTAMP_HEADER = "x-gatewright-timestamp"
SIGNATURE_HEADER = "x-gatewright-signature"
DELIVERY_HEADER = "x-gatewright-delivery"
ATTEMPT_HEADER = "x-gatewright-attempt"
SECRET_FILE = "webhook_secret"


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


def verify(secret: bytes, timestamp: str, body: bytes, signature: str, tolerance: float = 300.0) -> bool:
    """What a receiver does; here for tests and for anyone embedding gatewright."""
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, int(timestamp), body), signature)


def load_or_create_secret(configured: str | None, data_dir: Path) -> bytes:
    """The configured secret, else the one in ``data_dir`` (made on first use, readable by us only)."""
    if configured:
        return configured.encode()
    path = data_dir / SECRET_FILE
    if path.exists():
        return path.read_text().strip().encode()
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(32)
    # O_EXCL: two processes starting at once keep whichever secret was written first.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip().encode()
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    return secret.encode()


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays between attempts: base·2^(n-1) capped, at most ``max_attempts`` tries in all."""

    max_attempts: int = 8
    base: float = 1.0
    cap: float = 60.0

    def delay(self, failed_attempt: int) -> float:
        return float(min(self.base * 2 ** (failed_attempt - 1), self.cap))


class WebhookSender:
    """``core.webhooks.WebhookDelivery`` over httpx. ``secret`` is the key itself or how to get it,
    asked for on the first delivery (so a gateway whose tasks never use webhooks writes no secret file)."""

    def __init__(
        self,
        secret: bytes | Callable[[], bytes],
        backoff: Backoff | None = None,
        timeout: float = 10.0,
        guard: AddressGuard | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._secret = secret
        self.backoff = backoff or Backoff()
        self.guard = guard or AddressGuard()
        # Redirects are not followed: a public receiver could otherwise bounce a delivery inside.
        self._client = httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False, transport=transport)

    @property
    def secret(self) -> bytes:
        if callable(self._secret):
            self._secret = self._secret()
        return self._secret

    async def close(self) -> None:
        await self._client.aclose()

    async def refusal(self, url: str) -> str | None:
        try:
            await self.guard.target(url)
        except Unresolved:
            return None  # may resolve by the time of delivery, where it is checked again
        except Refused as refused:
            return str(refused)
        return None

    async def _post(self, url: str, body: bytes, delivery_id: str, attempt: int) -> Attempt:
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(self.secret, timestamp, body),
            DELIVERY_HEADER: delivery_id,
            ATTEMPT_HEADER: str(attempt),
        }
        at = iso(utcnow()) or ""
        try:
            target = await self.guard.target(url)
        except Refused as refused:
            return Attempt(attempt, at, None, f"refused: {refused}")
        headers["host"] = target.host_header
        extensions = {"sni_hostname": target.sni} if target.sni else None
        # The status keeps transport details to itself: error text would map the receiver's network.
        try:
            response = await self._client.post(target.url, content=body, headers=headers, extensions=extensions)
        except httpx.TimeoutException:
            return Attempt(attempt, at, None, "timed out")
        except httpx.HTTPError:
            return Attempt(attempt, at, None, "could not connect, or the connection failed")
        ok = 200 <= response.status_code < 300
        return Attempt(attempt, at, response.status_code, None if ok else f"HTTP {response.status_code}")

    async def deliver(self, url: str, body: bytes, delivery_id: str, record: Recorder, done: int = 0) -> bool:
        """POST until a 2xx or the attempts run out; ``done`` attempts were made before (a restart)."""
        for attempt in range(done + 1, self.backoff.max_attempts + 1):
            outcome = await self._post(url, body, delivery_id, attempt)
            await record(outcome)
            if outcome.ok:
                return True
            if outcome.error and outcome.error.startswith("refused:") and "resolve" not in outcome.error:
                log.warning("webhook %s refused: %s", delivery_id, outcome.error)
                return False  # an internal address stays internal: no retries
            log.info("webhook %s attempt %d failed: %s", delivery_id, attempt, outcome.error)
            if attempt < self.backoff.max_attempts:
                await asyncio.sleep(self.backoff.delay(attempt))
        log.warning("webhook %s not delivered after %d attempts", delivery_id, self.backoff.max_attempts)
        return False
