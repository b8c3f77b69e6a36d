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
      → console sessions           the web console's sessions (store, or memory)

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
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from gatewright.api.tasks.codec import TaskApiCodec
from gatewright.backends.registry import REQUIRED_FIELDS, BackendEnv, build_backends
from gatewright.core import catalog as catalogs
from gatewright.core.accounts import Accounts, NewKey
from gatewright.core.catalog import Catalog
from gatewright.core.ids import random_hex
from gatewright.core.jobs import Jobs
from gatewright.core.keys import Authenticator
from gatewright.core.ledger import LedgerWriter
from gatewright.core.ledger_leases import LeasePolicy
from gatewright.core.limits import Defaults, MemoryLimiter
from gatewright.core.pipeline import Gateway
from gatewright.core.platform import Limiter, Platform
from gatewright.core.routing import Router
from gatewright.core.sessions import MemorySessionStore, SessionStore
from gatewright.core.stored import MemoryResponseStore, ResponseStore, sweep_forever
from gatewright.outbound.guard import AddressGuard
from gatewright.outbound.webhooks import WebhookSender, load_or_create_secret
from gatewright.settings import Settings
from gatewright.store.accounts import SqlAccountStore
from gatewright.store.console_sessions import SqlSessionStore
from gatewright.store.db import create_engine, migrate
from gatewright.store.journal import SettlementJournal
from gatewright.store.keys import SqlKeyStore
from gatewright.store.ledger import SqlLedgerStore
from gatewright.store.redis_limits import RedisLimiter
from gatewright.store.responses import SqlResponseStore
from gatewright.store.tasks import SqlTaskStore

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
    console_sessions: SessionStore  # the web console's sessions (store, or memory)

    @property
    def accounts(self) -> Accounts | None:
        return self.platform.accounts if self.platform else None


def load_catalog(settings: Settings) -> Catalog:
    """The catalog file the settings name, checked against what each backend needs."""
    return catalogs.load_catalog(settings.catalog, REQUIRED_FIELDS)


@contextlib.asynccontextmanager
async def connect_store(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """The store the settings name, as it is (for checks that must not change it)."""
    engine = create_engine(settings.db_url)
    try:
        yield engine
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """The store the settings name, migrated to the current schema."""
    async with connect_store(settings) as engine:
        await migrate(engine)
        yield engine


def ledger_writer(
    engine: AsyncEngine, owner: str, leases: LeasePolicy | None = None, journal: Path | None = None
) -> LedgerWriter:
    """The one writer of balances, over the store (started by whoever batches requests through it);
    ``journal``: the directory of the settlement journals (a serving process's, with leases)."""
    journaled = SettlementJournal(journal, owner) if journal is not None and leases is not None else None
    return LedgerWriter(SqlLedgerStore(engine, owner), leases=leases, owner=owner, journal=journaled)


@contextlib.asynccontextmanager
async def open_accounts(settings: Settings) -> AsyncIterator[Accounts]:
    """Accounts, keys and credits in the store, for the commands (no gateway needed); credits are
    granted through a ledger writer of their own."""
    async with open_store(settings) as engine:
        ledger = ledger_writer(engine, owner=f"cli-{random_hex(4)}")
        try:
            yield Accounts(SqlAccountStore(engine), ledger)
        finally:
            await ledger.close()


async def _limiter(settings: Settings, stack: AsyncExitStack) -> Limiter:
    defaults = Defaults(settings.default_requests_per_minute, settings.default_tokens_per_minute)
    if not settings.redis_url:
        return MemoryLimiter(defaults, share=settings.workers)
    import redis.asyncio as redis

    client = redis.from_url(settings.redis_url)
    stack.push_async_callback(client.aclose)
    return RedisLimiter(client, defaults)


async def _sweep_forever(ledger: LedgerWriter) -> None:
    while True:
        await asyncio.sleep(60)
        try:
            await ledger.release_stale(HOLD_TTL)
        except Exception:  # a sweep that fails is retried next minute
            log.exception("releasing stale holds failed")


async def _settle_cut_requests(ledger: LedgerWriter) -> None:
    left = await ledger.wait_settled(SETTLE_AT_STOP)
    if left:
        log.info("stopping with %d holds open (work taken over after restart)", left)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@contextlib.asynccontextmanager
async def open_platform(settings: Settings, catalog: Catalog | None = None) -> AsyncIterator[PlatformServices]:
    async with AsyncExitStack() as stack:
        engine = await stack.enter_async_context(open_store(settings))
        ledger = ledger_writer(
            engine,
            owner=random_hex(8),
            leases=LeasePolicy() if settings.credit_leases else None,
            journal=settings.data_dir / "journal" if settings.settlement_journal else None,
        )
        stack.push_async_callback(ledger.close)
        # A store used by this process alone: every open hold is from a run that ended.
        await ledger.release_stale(None if settings.single_process else HOLD_TTL)
        # Key allow-lists name models by id or alias; the catalog says which model each one is.
        resolve = (lambda name: entry.id if (entry := catalog.find(name)) is not None else None) if catalog else None
        authenticator = Authenticator(SqlKeyStore(engine), settings.auth_cache_seconds, resolve)
        await ledger.start()
        stack.push_async_callback(_settle_cut_requests, ledger)  # runs before ledger.close
        limiter = await _limiter(settings, stack)
        if not settings.single_process:  # other processes share the store: one may die holding credits
            stack.push_async_callback(_cancel, asyncio.create_task(_sweep_forever(ledger)))
        accounts = Accounts(SqlAccountStore(engine), ledger, authenticator)
        yield PlatformServices(Platform(authenticator, ledger, limiter), accounts, engine)


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
        platform = await stack.enter_async_context(open_platform(settings, catalog)) if settings.platform else None
        gateway = Gateway(catalog, Router(catalog, backends), platform.platform if platform else None)
        store = platform.store if platform else None
        # Task jobs: after the platform (resumed tasks bill), closed before it (their holds settle).
        jobs = Jobs(
            gateway,
            TaskApiCodec(),
            owner=random_hex(8),
            store=SqlTaskStore(store) if store is not None else None,
            sender=WebhookSender(
                lambda: load_or_create_secret(settings.webhook_secret, settings.data_dir),
                guard=AddressGuard(settings.outbound_allow.split(",")),
            ),
            lease=timedelta(seconds=settings.task_lease_seconds),
            single_node=store is None or settings.single_process,
        )
        await jobs.start()
        stack.push_async_callback(jobs.close)
        sessions: SessionStore = SqlSessionStore(store) if store is not None else MemorySessionStore()
        yield Services(settings, gateway, jobs, platform, _response_store(settings, store, stack), sessions)


@dataclass(frozen=True)
class FirstRun:
    account_id: int
    management_key: NewKey
    api_key: NewKey
    operator_key: str  # the operator's credential (manages accounts; never calls models)


async def bootstrap(settings: Settings) -> FirstRun | None:
    """On an empty store: the operator's credential, and one account with starting credits, a
    management key and an API key."""
    async with open_accounts(settings) as accounts:
        if await accounts.count():
            return None
        _, operator = await accounts.create_operator_key("first start")
        account_id = await accounts.create_account(
            "default", settings.starting_credits, settings.low_balance_threshold, actor="system"
        )
        management = await accounts.create_key(account_id, "management", name="management", scopes=[])
        # The first key calls every model endpoint: chat completions and messages, and responses.
        api = await accounts.create_key(account_id, "api", name="default", scopes=["model:chat", "model:responses"])
        return FirstRun(account_id, management, api, operator)


async def ensure_operator_key(settings: Settings) -> str | None:
    """A store from before operators (upgraded): its first operator credential, made once."""
    async with open_accounts(settings) as accounts:
        if await accounts.operator_count():
            return None
        _, operator = await accounts.create_operator_key("first start after upgrade")
        return operator
