"""API keys and management keys: made random, shown once, stored as a hash and a prefix.

A key says what it is: ``gw-`` and 32 hex characters for an API key, ``gwm-`` for a management key,
so that secret scanners and people can tell them apart (and from other vendors' keys). Keys made
before these prefixes (32 bare hex characters) keep working: a key is looked up by the hash of the
whole string, whatever its form. A key's ``prefix`` (its public name in the key API) is the first
8 hex characters of its random part.

``Authenticator`` turns a bearer token into a ``Principal`` with one dict lookup on the hot path:
lookups are cached for ``ttl`` seconds, and this process's own changes to a key drop its cache
entry at once (other replicas see them within ``ttl``). Keys are read through a ``KeyStore``
(``store.keys.SqlKeyStore``) as ``KeyRecord``s.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from gatewright.core.errors import PermissionDenied, Unauthorized
from gatewright.core.platform import KeyKind, Principal

KEY_BYTES = 16  # 32 hex characters, like the reference platform's keys
PREFIX_LENGTH = 8

# What each kind of key starts with. No marker is a prefix of another, so each names one kind.
KEY_MARKERS: dict[str, str] = {"api": "gw-", "management": "gwm-"}


def new_key(kind: KeyKind = "api") -> str:
    return KEY_MARKERS[kind] + secrets.token_hex(KEY_BYTES)


def key_prefix(key: str) -> str:
    """The public name of a key: the first hex characters after its marker (or of a legacy key)."""
    for marker in KEY_MARKERS.values():
        if key.startswith(marker):
            return key[len(marker) : len(marker) + PREFIX_LENGTH]
    return key[:PREFIX_LENGTH]


def hash_key(key: str) -> str:
    # Keys are 128 random bits, so a fast hash is enough: nothing to brute-force.
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One stored key (never its secret: only the hash is stored, and it stays in the store)."""

    id: int
    account_id: int
    prefix: str
    kind: KeyKind
    name: str | None
    disabled: bool
    scopes: tuple[str, ...]
    limit_retention: str | None  # day | week | month | no_reset; None: no spend limit
    limit_threshold: int | None  # credits per period
    period_start: datetime | None
    period_spent: int
    period_reserved: int
    month_start: datetime | None
    month_spent: int
    requests_per_minute: int | None
    tokens_per_minute: int | None
    created_at: datetime
    updated_at: datetime


class KeyStore(Protocol):
    async def by_hash(self, digest: str) -> KeyRecord | None:
        """The key (not deleted) whose secret hashes to ``digest``."""
        ...

    async def by_id(self, key_id: int) -> KeyRecord | None:
        """The key (not deleted) with this id."""
        ...


@dataclass(frozen=True, slots=True)
class _Cached:
    principal: Principal | None
    disabled: bool
    expires: float


def principal_of(key: KeyRecord) -> Principal:
    return Principal(
        account_id=key.account_id,
        key_id=key.id,
        prefix=key.prefix,
        kind=key.kind,
        scopes=frozenset(key.scopes),
        requests_per_minute=key.requests_per_minute,
        tokens_per_minute=key.tokens_per_minute,
    )


class Authenticator:
    def __init__(self, keys: KeyStore, ttl: float = 5.0) -> None:
        self.keys = keys
        self.ttl = ttl
        self._cache: dict[str, _Cached] = {}
        # One store lookup per key at a time: requests arriving while it runs share its answer.
        self._pending: dict[str, asyncio.Future[_Cached]] = {}

    def forget(self, prefix: str | None = None) -> None:
        """Drop cached lookups (of one key, or all) after a change made in this process."""
        if prefix is None:
            self._cache.clear()
            return
        for digest, cached in list(self._cache.items()):
            if cached.principal is not None and cached.principal.prefix == prefix:
                del self._cache[digest]

    async def authenticate(self, token: str | None) -> Principal:
        return await self.authenticate_as(token, "api")

    async def authenticate_as(self, token: str | None, kind: KeyKind | None) -> Principal:
        """The key behind ``token``; ``kind`` restricts which kind of key is accepted."""
        if not token:
            raise Unauthorized(
                "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'.",
                code="missing_api_key",
            )
        digest = hash_key(token)
        cached = self._cache.get(digest)
        if cached is None or cached.expires < time.monotonic():
            cached = await self._refresh(digest)
        if cached.principal is None:
            raise Unauthorized("Incorrect API key provided.", code="invalid_api_key")
        if cached.disabled:
            raise PermissionDenied(
                f"The API key {cached.principal.prefix}… is disabled; enable it or use another key.",
                code="key_disabled",
            )
        principal = cached.principal
        if kind is not None and principal.kind != kind:
            if kind == "management":
                raise PermissionDenied(
                    "This endpoint needs a management key; API keys call models and read billing.",
                    code="management_key_required",
                )
            raise PermissionDenied(
                "Management keys manage keys and billing; call models with an API key.",
                code="api_key_required",
            )
        return principal

    async def _refresh(self, digest: str) -> _Cached:
        pending = self._pending.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[_Cached] = asyncio.get_running_loop().create_future()
        self._pending[digest] = future
        try:
            cached = await self._lookup(digest)
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved here, so a lookup nobody shared does not warn
            raise
        finally:
            del self._pending[digest]
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[digest] = cached
        future.set_result(cached)
        return cached

    async def _lookup(self, digest: str) -> _Cached:
        key = await self.keys.by_hash(digest)
        expires = time.monotonic() + self.ttl
        if key is None:
            return _Cached(None, False, expires)
        return _Cached(principal_of(key), key.disabled, expires)

    async def principal_of_key(self, key_id: int) -> Principal:
        """The key with this id as it is now (uncached), e.g. to resume a task it submitted;
        ``Unauthorized`` when it was deleted or disabled since."""
        key = await self.keys.by_id(key_id)
        if key is None or key.disabled:
            raise Unauthorized("The API key that submitted this task was deleted or disabled.", code="key_disabled")
        return principal_of(key)
