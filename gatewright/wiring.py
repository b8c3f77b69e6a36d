"""The composition root: the one place a gateway is built from its settings.

``app.py`` (the HTTP application) and ``cli/`` (the commands) both build through here. Each object
is made once, complete, in this order, and closed in the reverse order:

    settings
      → catalog                    load_catalog: a bad file is reported as where and why
      → backends → router          one backend per deployment; models load at start
      → store                      migrated; holds an earlier run left open are released
          → authenticator, ledger writer, limiter (memory or redis), accounts, stale-hold sweeper
      → Gateway(catalog, router, platform)
      → webhook sender → jobs      resumes the tasks an earlier process left unfinished
      → response store             the Responses API's stored responses (store, or memory), swept

Nothing below this module reads ``Settings``: each piece is handed the plain values it needs (the
import contracts in ``pyproject.toml`` keep ``api``, ``core``, ``backends`` and ``store`` from
importing it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from gatewright.api.tasks.codec import TaskApiCodec
from gatewright.backends.registry import REQUIRED_FIELDS, BackendEnv, build_backends
from gatewright.core import catalog as catalogs
from gatewright.core.accounts import Accounts, NewKey
from gatewright.core.catalog import Catalog
from gatewright.core.ids import random_hex
from gatewright.core.jobs import Jobs
from gatewright.core.keys import Authenticator
from gatewright.core.ledger import SqlLedger, release_stale_holds
from gatewright.core.limits import Defaults, MemoryLimiter, RedisLimiter
from gatewright.core.pipeline import Gateway
from gatewright.core.platform import Limiter, Platform
from gatewright.core.routing import Router
from gatewright.core.stored import MemoryResponseStore, ResponseStore, sweep_forever
from gatewright.outbound.webhooks import WebhookSender, load_or_create_secret
from gatewright.settings import Settings
from gatewright.store.db import create_engine, migrate
from gatewright.store.responses import SqlResponseStore

log = logging.getLogger("gatewright.platform")

# Longer than any request can run: holds older than this belong to a replica that died.
HOLD_TTL = timedelta(hours=1)
# At a stop, how long requests that were cut may take to unwind and queue their settlements.
SETTLE_AT_STOP = 5.0


@dataclass(frozen=True)
class PlatformServices:
    """Keys, credits and limits over the store: what the gateway needs to bill and refuse."""

    platform: Platform
    accounts: Accounts
    store: AsyncEngine


@dataclass(frozen=True)
class Services:
    """A built gateway: what the routes and the commands use."""

    settings: Settings
    gateway: Gateway
    jobs: Jobs
    platform: PlatformServices | None  # None with the platform off (a bare proxy)
    responses: ResponseStore  # stored responses of the Responses API

    @property
    def accounts(self) -> Accounts | None:
        return self.platform.accounts if self.platform else None


def load_catalog(settings: Settings) -> Catalog:
    """The catalog file the settings name, checked against what each backend needs."""
    return catalogs.load_catalog(settings.catalog, REQUIRED_FIELDS)


@contextlib.asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """The store the settings name, migrated to the current schema."""
    engine = create_engine(settings.db_url)
    try:
        await migrate(engine)
        yield engine
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def open_accounts(settings: Settings) -> AsyncIterator[Accounts]:
    """Accounts, keys and credits in the store, for the commands (no gateway needed)."""
    async with open_store(settings) as engine:
        yield Accounts(engine)


async def _limiter(settings: Settings, stack: AsyncExitStack) -> Limiter:
    defaults = Defaults(settings.default_requests_per_minute, settings.default_tokens_per_minute)
    if not settings.redis_url:
        return MemoryLimiter(defaults, share=settings.workers)
    import redis.asyncio as redis

    client = redis.from_url(settings.redis_url)
    stack.push_async_callback(client.aclose)
    return RedisLimiter(client, defaults)


async def _sweep_forever(engine: AsyncEngine) -> None:
    while True:
        await asyncio.sleep(60)
        try:
            await release_stale_holds(engine, HOLD_TTL)
        except Exception:  # a sweep that fails is retried next minute
            log.exception("releasing stale holds failed")


async def _settle_cut_requests(ledger: SqlLedger) -> None:
    left = await ledger.wait_settled(SETTLE_AT_STOP)
    if left:
        log.info("stopping with %d holds open (work taken over after restart)", left)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@contextlib.asynccontextmanager
async def open_platform(settings: Settings) -> AsyncIterator[PlatformServices]:
    async with AsyncExitStack() as stack:
        engine = await stack.enter_async_context(open_store(settings))
        # A store used by this process alone: every open hold is from a run that ended.
        await release_stale_holds(engine, None if settings.single_process else HOLD_TTL)
        authenticator = Authenticator(engine, settings.auth_cache_seconds)
        ledger = SqlLedger(engine, owner=random_hex(8))
        await ledger.start()
        stack.push_async_callback(ledger.close)
        stack.push_async_callback(_settle_cut_requests, ledger)  # runs before ledger.close
        limiter = await _limiter(settings, stack)
        if not settings.single_process:  # other processes share the store: one may die holding credits
            stack.push_async_callback(_cancel, asyncio.create_task(_sweep_forever(engine)))
        yield PlatformServices(Platform(authenticator, ledger, limiter), Accounts(engine, authenticator), engine)


def _response_store(settings: Settings, engine: AsyncEngine | None, stack: AsyncExitStack) -> ResponseStore:
    """Stored responses in the store when there is one, in memory for a bare proxy; swept for
    expired ones at a pace that suits the retention."""
    responses: ResponseStore = SqlResponseStore(engine) if engine is not None else MemoryResponseStore()
    every = min(600.0, max(1.0, settings.responses_retention_days * 86400 / 4))
    stack.push_async_callback(_cancel, asyncio.create_task(sweep_forever(responses, every)))
    return responses


@contextlib.asynccontextmanager
async def open_gateway(settings: Settings, catalog: Catalog | None = None) -> AsyncIterator[Services]:
    """Everything a serving process needs, started; all of it is closed when the block ends."""
    catalog = catalog or load_catalog(settings)
    async with AsyncExitStack() as stack:
        backends = build_backends(catalog, BackendEnv(model_cache=settings.model_cache))
        for backend in backends.values():
            stack.push_async_callback(backend.close)
            if settings.load_models_at_start:
                await backend.start()
        platform = await stack.enter_async_context(open_platform(settings)) if settings.platform else None
        gateway = Gateway(catalog, Router(catalog, backends), platform.platform if platform else None)
        store = platform.store if platform else None
        # Task jobs: after the platform (resumed tasks bill), closed before it (their holds settle).
        jobs = Jobs(
            gateway,
            TaskApiCodec(),
            owner=random_hex(8),
            engine=store,
            sender=WebhookSender(lambda: load_or_create_secret(settings.webhook_secret, settings.data_dir)),
            lease=timedelta(seconds=settings.task_lease_seconds),
            single_node=store is None or settings.single_process,
        )
        await jobs.start()
        stack.push_async_callback(jobs.close)
        yield Services(settings, gateway, jobs, platform, _response_store(settings, store, stack))


@dataclass(frozen=True)
class FirstRun:
    account_id: int
    management_key: NewKey
    api_key: NewKey


async def bootstrap(settings: Settings) -> FirstRun | None:
    """On an empty store: one account with starting credits, a management key and an API key."""
    async with open_accounts(settings) as accounts:
        if await accounts.count():
            return None
        account_id = await accounts.create_account("default", settings.starting_credits, settings.low_balance_threshold)
        management = await accounts.create_key(account_id, "management", name="management", scopes=[])
        # The first key calls every model endpoint: chat completions and messages, and responses.
        api = await accounts.create_key(account_id, "api", name="default", scopes=["model:chat", "model:responses"])
        return FirstRun(account_id, management, api)
