"""Accounts, keys and authentication on a real store: SQLite and PostgreSQL run the same tests."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import inspect, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gatewright.core.accounts import Accounts, KeyLimit
from gatewright.core.errors import InvalidRequest, NotFound, PermissionDenied, Unauthorized
from gatewright.core.keys import Authenticator, key_prefix
from gatewright.store.db import migrate
from gatewright.store.keys import SqlKeyStore
from gatewright.store.tables import api_keys, ledger
from tests.support.accounts import accounts_on


async def test_migrations_create_every_table_and_rerun_cleanly(engine: AsyncEngine) -> None:
    await migrate(engine)  # a second run finds the schema current and changes nothing
    async with engine.connect() as conn:
        names = set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
    assert {"accounts", "api_keys", "holds", "ledger", "usage_records", "alembic_version"} <= names


async def test_account_starting_credits_are_one_ledger_row(accounts: Accounts) -> None:
    account_id = await accounts.create_account("acme", 5_000)
    row = await accounts.account(account_id)
    assert (row.balance, row.reserved, row.name) == (5_000, 0, "acme")
    rows = await accounts.ledger_entries(account_id)
    assert [(r.kind, r.credits, r.balance_after) for r in rows] == [("grant", 5_000, 5_000)]


async def test_add_and_remove_credits_never_below_available(accounts: Accounts) -> None:
    account_id = await accounts.create_account("acme", 1_000)
    assert await accounts.add_credits(account_id, 500, "top-up") == 1_500
    assert await accounts.add_credits(account_id, -1_200, "refund") == 300
    with pytest.raises(InvalidRequest):
        await accounts.add_credits(account_id, -301)
    with pytest.raises(InvalidRequest):
        await accounts.add_credits(account_id, 0)
    with pytest.raises(NotFound):
        await accounts.add_credits(account_id + 99, 10)
    rows = await accounts.ledger_entries(account_id)
    assert [r.credits for r in reversed(rows)] == [1_000, 500, -1_200]
    assert sum(r.credits for r in rows) == (await accounts.account(account_id)).balance


async def test_key_is_stored_only_as_hash_and_prefix(accounts: Accounts, engine: AsyncEngine) -> None:
    account_id = await accounts.create_account("acme", 0)
    made = await accounts.create_key(account_id, "api", name="ci", scopes=["model:chat"])
    assert made.key.startswith("gw-") and len(made.key) == 35 and all(c in "0123456789abcdef" for c in made.key[3:])
    assert made.row.prefix == key_prefix(made.key)
    async with engine.connect() as conn:
        stored = (await conn.execute(select(api_keys).where(api_keys.c.prefix == made.row.prefix))).one()
    assert stored.key_hash == hashlib.sha256(made.key.encode()).hexdigest()
    assert made.key not in {str(value) for value in stored._mapping.values()}


async def test_keys_list_oldest_first_and_update_fields(accounts: Accounts) -> None:
    account_id = await accounts.create_account("acme", 0)
    first = await accounts.create_key(account_id, "api", name="first")
    second = await accounts.create_key(account_id, "api", name="second", limit=KeyLimit("week", 25))
    assert [k.prefix for k in await accounts.keys(account_id)] == [first.row.prefix, second.row.prefix]
    assert second.row.limit_retention == "week" and second.row.limit_threshold == 50_000_000

    updated = await accounts.update_key(
        first.row.prefix, account_id, {"name": "renamed", "disabled": True, "scopes": ["model:chat", "model:tasks"]}
    )
    assert (updated.name, updated.disabled, updated.scopes) == ("renamed", True, ("model:chat", "model:tasks"))
    assert updated.updated_at >= updated.created_at
    cleared = await accounts.update_key(second.row.prefix, account_id, {"limit": None})
    assert cleared.limit_retention is None and cleared.limit_threshold is None


async def test_key_validation_errors_name_the_parameter(accounts: Accounts) -> None:
    account_id = await accounts.create_account("acme", 0)
    with pytest.raises(InvalidRequest) as bad_scope:
        await accounts.create_key(account_id, "api", scopes=["model:everything"])
    assert bad_scope.value.param == "scopes"
    with pytest.raises(InvalidRequest) as bad_retention:
        await accounts.create_key(account_id, "api", limit=KeyLimit("fortnight", 1))
    assert bad_retention.value.param == "limit.retention"
    with pytest.raises(InvalidRequest) as bad_threshold:
        await accounts.create_key(account_id, "api", limit=KeyLimit("day", -1))
    assert bad_threshold.value.param == "limit.threshold"


async def test_keys_of_other_accounts_are_not_found(accounts: Accounts) -> None:
    mine = await accounts.create_account("mine", 0)
    theirs = await accounts.create_account("theirs", 0)
    key = await accounts.create_key(theirs, "api")
    with pytest.raises(NotFound):
        await accounts.key(key.row.prefix, mine)
    with pytest.raises(NotFound):
        await accounts.update_key(key.row.prefix, mine, {"disabled": True})
    with pytest.raises(NotFound):
        await accounts.delete_key(key.row.prefix, mine)
    assert [k.prefix for k in await accounts.keys(mine)] == []


async def test_soft_delete_keeps_the_row_and_stops_authentication(accounts: Accounts, engine: AsyncEngine) -> None:
    account_id = await accounts.create_account("acme", 0)
    made = await accounts.create_key(account_id, "api")
    auth = accounts.authenticator
    assert auth is not None
    assert (await auth.authenticate(made.key)).prefix == made.row.prefix
    await accounts.delete_key(made.row.prefix, account_id)
    with pytest.raises(Unauthorized):
        await auth.authenticate(made.key)  # this process forgot its cached lookup at once
    with pytest.raises(NotFound):
        await accounts.key(made.row.prefix, account_id)
    async with engine.connect() as conn:
        row = (await conn.execute(select(api_keys).where(api_keys.c.prefix == made.row.prefix))).one()
    assert row.deleted_at is not None and row.disabled


async def test_authenticator_kinds_disabled_and_unknown(accounts: Accounts) -> None:
    account_id = await accounts.create_account("acme", 0)
    api = await accounts.create_key(account_id, "api", scopes=["model:chat"])
    management = await accounts.create_key(account_id, "management", scopes=[])
    auth = accounts.authenticator
    assert isinstance(auth, Authenticator)

    principal = await auth.authenticate(api.key)
    assert (principal.account_id, principal.kind, principal.scopes) == (account_id, "api", frozenset({"model:chat"}))
    assert (await auth.authenticate_as(management.key, "management")).kind == "management"
    assert (await auth.authenticate_as(management.key, None)).kind == "management"
    with pytest.raises(PermissionDenied) as wrong_kind:
        await auth.authenticate(management.key)
    assert wrong_kind.value.code == "api_key_required"
    with pytest.raises(PermissionDenied) as needs_management:
        await auth.authenticate_as(api.key, "management")
    assert needs_management.value.code == "management_key_required"
    with pytest.raises(Unauthorized) as missing:
        await auth.authenticate(None)
    assert missing.value.code == "missing_api_key"
    with pytest.raises(Unauthorized) as unknown:
        await auth.authenticate("0" * 32)
    assert unknown.value.code == "invalid_api_key"

    await accounts.update_key(api.row.prefix, account_id, {"disabled": True})
    with pytest.raises(PermissionDenied) as disabled:
        await auth.authenticate(api.key)
    assert disabled.value.code == "key_disabled"
    await accounts.update_key(api.row.prefix, account_id, {"disabled": False})
    assert (await auth.authenticate(api.key)).prefix == api.row.prefix


async def test_authenticator_cache_sees_other_writers_after_its_ttl(accounts: Accounts, engine: AsyncEngine) -> None:
    account_id = await accounts.create_account("acme", 0)
    made = await accounts.create_key(account_id, "api")
    cached = Authenticator(SqlKeyStore(engine), ttl=3600)
    fresh = Authenticator(SqlKeyStore(engine), ttl=0)
    await cached.authenticate(made.key)
    async with accounts_on(engine) as other_replica:  # changes made elsewhere: no cache of ours is dropped
        await other_replica.update_key(made.row.prefix, account_id, {"disabled": True})
    assert (await cached.authenticate(made.key)).prefix == made.row.prefix  # still cached
    with pytest.raises(PermissionDenied):
        await fresh.authenticate(made.key)


async def test_ledger_rows_sum_to_the_balance(accounts: Accounts, engine: AsyncEngine) -> None:
    account_id = await accounts.create_account("acme", 700)
    for amount in (300, -250, 1_000):
        await accounts.add_credits(account_id, amount)
    async with engine.connect() as conn:
        total = sum(r.credits for r in await conn.execute(select(ledger).where(ledger.c.account_id == account_id)))
    assert total == (await accounts.account(account_id)).balance == 1_750
