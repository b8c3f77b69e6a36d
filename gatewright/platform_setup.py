"""Opening the platform layer (store, keys, ledger, limits) for the app and the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from gatewright.core.accounts import Accounts, NewKey
from gatewright.core.ids import random_hex
from gatewright.core.keys import Authenticator
from gatewright.core.ledger import SqlLedger, release_stale_holds
from gatewright.core.limits import Defaults, MemoryLimiter, RedisLimiter
from gatewright.core.platform import Limiter, Platform
from gatewright.settings import Settings
from gatewright.store.db import create_engine, migrate

log = logging.getLogger("gatewright.platform")

# Longer than any request can run: holds older than this belong to a replica that died.
HOLD_TTL = timedelta(hours=1)


@dataclass
class PlatformBundle:
    platform: Platform
    accounts: Accounts
    engine: AsyncEngine
    closers: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)

    async def close(self) -> None:
        for close in reversed(self.closers):
            await close()


async def open_store(settings: Settings) -> AsyncEngine:
    engine = create_engine(settings.db_url)
    await migrate(engine)
    return engine


def _limiter(settings: Settings) -> tuple[Limiter, Callable[[], Awaitable[Any]] | None]:
    defaults = Defaults(settings.default_requests_per_minute, settings.default_tokens_per_minute)
    if not settings.redis_url:
        return MemoryLimiter(defaults, share=settings.workers), None
    import redis.asyncio as redis

    client = redis.from_url(settings.redis_url)
    return RedisLimiter(client, defaults), client.aclose


async def _sweep_forever(engine: AsyncEngine) -> None:
    while True:
        await asyncio.sleep(60)
        try:
            await release_stale_holds(engine, HOLD_TTL)
        except Exception:  # a sweep that fails is retried next minute
            log.exception("releasing stale holds failed")


async def open_platform(settings: Settings) -> PlatformBundle:
    engine = await open_store(settings)
    # A store used by this process alone: every open hold is from a run that ended.
    await release_stale_holds(engine, None if settings.single_process else HOLD_TTL)
    authenticator = Authenticator(engine, settings.auth_cache_seconds)
    ledger = SqlLedger(engine, owner=random_hex(8))
    await ledger.start()
    limiter, close_limiter = _limiter(settings)
    bundle = PlatformBundle(Platform(authenticator, ledger, limiter), Accounts(engine, authenticator), engine)
    bundle.closers.append(engine.dispose)
    bundle.closers.append(ledger.close)
    if close_limiter is not None:
        bundle.closers.append(close_limiter)
    if not settings.single_process:
        sweeper = asyncio.create_task(_sweep_forever(engine))

        async def stop_sweeper() -> None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper

        bundle.closers.append(stop_sweeper)
    return bundle


@dataclass(frozen=True)
class FirstRun:
    account_id: int
    management_key: NewKey
    api_key: NewKey


async def bootstrap(settings: Settings) -> FirstRun | None:
    """On an empty store: one account with starting credits, a management key and an API key."""
    engine = await open_store(settings)
    try:
        accounts = Accounts(engine)
        if await accounts.count():
            return None
        account_id = await accounts.create_account("default", settings.starting_credits, settings.low_balance_threshold)
        management = await accounts.create_key(account_id, "management", name="management", scopes=[])
        # The first key calls every model endpoint: chat completions and messages, and responses.
        api = await accounts.create_key(account_id, "api", name="default", scopes=["model:chat", "model:responses"])
        return FirstRun(account_id, management, api)
    finally:
        await engine.dispose()
