"""API keys and management keys: made random, shown once, stored as a hash and a prefix.

A key says what it is: ``gw-`` and 32 hex characters for an API key, ``gwm-`` for a management key,
``gwo-`` for the operator's credential (kept apart from every account, in a table of its own),
``gwr-`` for a redemption code, so that secret scanners and people can tell them apart (and from
other vendors' keys). Keys made before these prefixes (32 bare hex characters) keep working: a
key is looked up by the hash of the whole string, whatever its form. A key's ``prefix`` (its
public name in the key API) is the first 8 hex characters of its random part.

``Authenticator`` turns a bearer token into a ``Principal`` with one dict lookup on the hot path:
lookups are cached for ``ttl`` seconds, and this process's own changes to a key drop its cache
entry at once. Only the model routes, which reserve credits, use the cache: a disabled account
is refused there at once everywhere by the ledger's reservation, which reads the account row in its
transaction (a disabled key, within ``ttl`` on other replicas). Every other route (billing, key
management, usage, listing models, counting tokens, reading stored responses, polling tasks)
authenticates ``fresh``, with a store read, so a key or account disabled on one replica is refused
at once on every replica there too.
Operator credentials are looked up uncached, on every call. Keys are read through a ``KeyStore``
(``store.keys.SqlKeyStore``) as ``KeyRecord``s.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from gatewright.core.clock import aware, utcnow
from gatewright.core.errors import PermissionDenied, Unauthorized
from gatewright.core.platform import KeyKind, Principal

KEY_BYTES = 16  # 32 hex characters, like the reference platform's keys
PREFIX_LENGTH = 8

# What each kind of key starts with. No marker is a prefix of another, so each names one kind.
KEY_MARKERS: dict[str, str] = {"api": "gw-", "management": "gwm-", "operator": "gwo-", "code": "gwr-"}


def new_key(kind: str = "api") -> str:
    """A new secret of this kind: an API, management or operator key, or a redemption code."""
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
    models: tuple[str, ...] | None = None  # the allow-list as given (ids or aliases); None: all
    expires_at: datetime | None = None
    account_disabled: bool = False  # the key's account is disabled (or deleted)
    last_used_at: datetime | None = None  # the ledger's last write for a request of it; None: never


@dataclass(frozen=True, slots=True)
class OperatorRecord:
    """One operator credential (only its hash is stored)."""

    id: int
    prefix: str
    name: str | None
    created_at: datetime


class KeyStore(Protocol):
    async def by_hash(self, digest: str) -> KeyRecord | None:
        """The key (not deleted) whose secret hashes to ``digest``, with its account's state."""
        ...

    async def operator_by_hash(self, digest: str) -> OperatorRecord | None:
        """The operator credential (not deleted) whose secret hashes to ``digest``."""
        ...

    async def by_id(self, key_id: int) -> KeyRecord | None:
        """The key (not deleted) with this id."""
        ...


@dataclass(frozen=True, slots=True)
class _Cached:
    principal: Principal | None
    refusal: PermissionDenied | None  # the key or its account is disabled
    expires: float
    operator: bool = False  # no key, but the operator's credential


def principal_of(key: KeyRecord, resolve: Callable[[str], str | None] | None = None) -> Principal:
    """``resolve`` turns the allow-list's ids and aliases into canonical model ids (the catalog's)."""
    models = None
    if key.models is not None:
        models = frozenset((resolve(name) if resolve else None) or name for name in key.models)
    return Principal(
        account_id=key.account_id,
        key_id=key.id,
        prefix=key.prefix,
        kind=key.kind,
        scopes=frozenset(key.scopes),
        requests_per_minute=key.requests_per_minute,
        tokens_per_minute=key.tokens_per_minute,
        models=models,
        expires_at=aware(key.expires_at),
    )


def _refusal(key: KeyRecord) -> PermissionDenied | None:
    if key.account_disabled:
        return PermissionDenied(
            f"The account of API key {key.prefix}… is disabled; ask the gateway's operator.", code="account_disabled"
        )
    if key.disabled:
        return PermissionDenied(
            f"The API key {key.prefix}… is disabled; enable it or use another key.", code="key_disabled"
        )
    return None


class Authenticator:
    def __init__(self, keys: KeyStore, ttl: float = 5.0, resolve: Callable[[str], str | None] | None = None) -> None:
        self.keys = keys
        self.ttl = ttl
        self.resolve = resolve  # model id or alias → canonical id (set by the composition root)
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

    async def authenticate(self, token: str | None, fresh: bool = False) -> Principal:
        return await self.authenticate_as(token, "api", fresh)

    async def authenticate_as(self, token: str | None, kind: KeyKind | None, fresh: bool = False) -> Principal:
        """The key behind ``token``; ``kind`` restricts which kind of key is accepted. ``fresh``
        reads the key from the store, not the cache: for calls that reserve no credits, so that a
        key or account disabled on any replica is refused at once there too."""
        if not token:
            raise Unauthorized(
                "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'.",
                code="missing_api_key",
            )
        digest = hash_key(token)
        cached = self._cache.get(digest)
        if fresh or cached is None or cached.expires < time.monotonic():
            cached = await self._refresh(digest)
        if cached.principal is None:
            if cached.operator:
                raise PermissionDenied(
                    "The operator credential manages accounts and codes (/v1/admin/…); it never calls "
                    "models or acts as an account. Use an account's API or management key.",
                    code="operator_key_not_allowed",
                )
            raise Unauthorized("Incorrect API key provided.", code="invalid_api_key")
        if cached.refusal is not None:
            raise cached.refusal
        principal = cached.principal
        if principal.expires_at is not None and principal.expires_at <= utcnow():
            raise Unauthorized(f"The API key {principal.prefix}… has expired.", code="key_expired")
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

    async def is_credential(self, token: str | None) -> bool:
        if not token:
            return False
        try:
            await self.authenticate_as(token, None, fresh=True)
            return True
        except (Unauthorized, PermissionDenied):  # not an account's working key: the operator's?
            return await self.keys.operator_by_hash(hash_key(token)) is not None

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
            return _Cached(None, None, expires, operator=await self.keys.operator_by_hash(digest) is not None)
        return _Cached(principal_of(key, self.resolve), _refusal(key), expires)

    async def operator(self, token: str | None) -> OperatorRecord:
        """The operator credential behind ``token`` (looked up every time: deleting one takes
        effect at once); an account's key is refused."""
        if not token:
            raise Unauthorized(
                "You didn't provide the operator key. Send it as 'Authorization: Bearer gwo-…'.",
                code="missing_api_key",
            )
        record = await self.keys.operator_by_hash(hash_key(token))
        if record is not None:
            return record
        if (await self.keys.by_hash(hash_key(token))) is not None:
            raise PermissionDenied(
                "This endpoint needs the operator key; an account's keys cannot manage accounts or credits.",
                code="operator_key_required",
            )
        raise Unauthorized("Incorrect operator key provided.", code="invalid_api_key")

    async def principal_of_key(self, key_id: int) -> Principal:
        """The key with this id as it is now (uncached), e.g. to resume a task it submitted;
        ``Unauthorized`` when it was deleted or disabled since."""
        key = await self.keys.by_id(key_id)
        if key is None or key.disabled or key.account_disabled:
            raise Unauthorized("The API key that submitted this task was deleted or disabled.", code="key_disabled")
        return principal_of(key, self.resolve)
