"""The schema. Money is whole credits in BIGINT columns (2,000,000 credits = 1 USD)."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    false,
)

metadata = MetaData()

# BIGINT ids on PostgreSQL, but SQLite only autoincrements a column declared INTEGER.
Id = BigInteger().with_variant(Integer(), "sqlite")

accounts = Table(
    "accounts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("email", String(320), nullable=True),
    Column("balance", BigInteger, nullable=False, default=0),
    # Credits held by requests in flight; the spendable balance is balance - reserved.
    Column("reserved", BigInteger, nullable=False, default=0),
    Column("low_balance_threshold", BigInteger, nullable=False, default=10_000),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # Migration 0004: a disabled account's keys stop (the ledger refuses its reservations); a
    # deleted one is also disabled, and stays as a row (its ledger and usage refer to it).
    Column("disabled", Boolean, nullable=False, default=False, server_default=false()),
    Column("deleted_at", DateTime(timezone=True), nullable=True),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("account_id", Id, ForeignKey("accounts.id"), nullable=False),
    Column("prefix", String(8), nullable=False, unique=True),
    Column("key_hash", String(64), nullable=False, unique=True),  # sha256 hex; keys are random
    Column("kind", String(16), nullable=False),  # "api" | "management"
    Column("name", String(200), nullable=True),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("scopes", JSON, nullable=False, default=list),
    Column("limit_retention", String(16), nullable=True),  # day | week | month | no_reset
    Column("limit_threshold", BigInteger, nullable=True),  # credits per period
    Column("period_start", DateTime(timezone=True), nullable=True),
    Column("period_spent", BigInteger, nullable=False, default=0),
    Column("period_reserved", BigInteger, nullable=False, default=0),
    Column("month_start", DateTime(timezone=True), nullable=True),
    Column("month_spent", BigInteger, nullable=False, default=0),
    Column("requests_per_minute", Integer, nullable=True),
    Column("tokens_per_minute", Integer, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # Deleted keys stay as rows (usage and holds refer to them) but never authenticate again.
    Column("deleted_at", DateTime(timezone=True), nullable=True),
    # Migration 0004: key policies. The models the key may call (ids or aliases; null: all), and
    # when it stops working (null: never).
    Column("models", JSON, nullable=True),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    # Migration 0006: when the ledger last wrote the key's row for a request of it (null: never).
    Column("last_used_at", DateTime(timezone=True), nullable=True),
)

holds = Table(
    "holds",
    metadata,
    Column("request_id", String(64), primary_key=True),
    Column("account_id", Id, ForeignKey("accounts.id"), nullable=False),
    Column("key_id", Id, ForeignKey("api_keys.id"), nullable=False),
    Column("credits", BigInteger, nullable=False),
    Column("model", String(200), nullable=False),
    Column("status", String(16), nullable=False),  # held | settled | released
    Column("owner", String(64), nullable=False),  # the gateway process that holds it
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_holds_status_created", "status", "created_at"),
)

# Migration 0007: credit leases. A process holds credits of one (account, key) in bulk and
# reserves against them in memory (core.ledger); the held credits count in the account's reserved
# and the key's period_reserved. The holder extends expires_at while it lives; a lease past it is
# closed by any replica's sweep, giving back what it held.
leases = Table(
    "leases",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("account_id", Id, ForeignKey("accounts.id"), nullable=False),
    Column("key_id", Id, ForeignKey("api_keys.id"), nullable=False),
    Column("credits", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),  # held | returned | released
    Column("owner", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Index("ix_leases_status_expires", "status", "expires_at"),
)

ledger = Table(
    "ledger",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("account_id", Id, ForeignKey("accounts.id"), nullable=False),
    Column("key_id", Id, nullable=True),
    Column("request_id", String(64), nullable=True, unique=True),
    Column("kind", String(16), nullable=False),  # charge | grant | adjust
    Column("credits", BigInteger, nullable=False),  # signed change of balance
    Column("balance_after", BigInteger, nullable=False),
    Column("note", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("actor", String(64), nullable=True),  # migration 0004: who granted (operator key, cli)
    Index("ix_ledger_account_created", "account_id", "created_at"),
)

usage_records = Table(
    "usage_records",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("request_id", String(64), nullable=False, unique=True),
    Column("account_id", Id, ForeignKey("accounts.id"), nullable=False),
    Column("key_id", Id, nullable=False),
    Column("key_prefix", String(8), nullable=False),
    Column("model", String(200), nullable=False),
    Column("input_tokens", Integer, nullable=False),
    Column("cached_tokens", Integer, nullable=False),
    Column("output_tokens", Integer, nullable=False),
    Column("reasoning_tokens", Integer, nullable=False),
    Column("credits", BigInteger, nullable=False),
    Column("usd", Float, nullable=False),
    Column("status", String(16), nullable=False),  # ok | aborted | error
    Column("estimated", Boolean, nullable=False, default=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Migration 0006 (null on older rows): the API the request came through (core.dialects), and
    # milliseconds from the gateway taking the request to the end of its answer.
    Column("dialect", String(32), nullable=True),
    Column("latency_ms", Integer, nullable=True),
    Index("ix_usage_account_created", "account_id", "created_at"),
    Index("ix_usage_created", "created_at"),  # migration 0004: the operator's reads across accounts
)

# Migration 0004: the operator's credentials, apart from every account (hashes, like keys).
operator_keys = Table(
    "operator_keys",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("prefix", String(8), nullable=False, unique=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("name", String(200), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("deleted_at", DateTime(timezone=True), nullable=True),
)

# Migration 0004: redemption codes the operator mints; each pays out once (redeemed_at set in the
# ledger transaction that credits the account).
redemption_codes = Table(
    "redemption_codes",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("prefix", String(8), nullable=False, unique=True),
    Column("code_hash", String(64), nullable=False, unique=True),
    Column("credits", BigInteger, nullable=False),
    Column("note", Text, nullable=True),
    Column("created_by", String(64), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("redeemed_at", DateTime(timezone=True), nullable=True),
    Column("redeemed_by", Id, ForeignKey("accounts.id"), nullable=True),
)

tasks = Table(
    "tasks",
    metadata,
    Column("task_uuid", String(36), primary_key=True),
    Column("account_id", Id, nullable=True),
    Column("key_id", Id, nullable=True),
    Column("task_type", String(32), nullable=False),
    Column("request", JSON, nullable=False),  # the task object as received
    Column("fingerprint", String(64), nullable=False),  # sha256 of the canonical request
    Column("delivery", String(8), nullable=False),
    Column("status", String(16), nullable=False),  # processing | success | error
    Column("results", JSON, nullable=False, default=list),
    Column("error", JSON, nullable=True),
    Column("webhook_url", Text, nullable=True),
    Column("webhook_attempts", JSON, nullable=False, default=list),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),  # also the owner's heartbeat
    # Migration 0002: who runs the task, how many runs it has had, whether webhooks are owed.
    Column("owner", String(64), nullable=True),
    Column("attempt", Integer, nullable=False, default=0, server_default="0"),
    Column("webhook_pending", Boolean, nullable=False, default=False, server_default=false()),
    Index("ix_tasks_status", "status"),
)

# Migration 0003: stored responses of the Responses API, one JSON document each, owned by an account.
responses = Table(
    "responses",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("account_id", Id, ForeignKey("accounts.id"), nullable=False),
    Column("document", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Index("ix_responses_expires_at", "expires_at"),
)

# Migration 0005: usage summed by day (UTC), account, model and key; written with each settlement
# by the ledger's writer, read by the usage-by-day endpoints (a month is a few hundred rows).
usage_days = Table(
    "usage_days",
    metadata,
    Column("account_id", Id, ForeignKey("accounts.id"), primary_key=True),
    Column("day", String(10), primary_key=True),  # YYYY-MM-DD
    Column("model", String(200), primary_key=True),
    Column("key_prefix", String(8), primary_key=True),
    Column("requests", BigInteger, nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("credits", BigInteger, nullable=False),
    Index("ix_usage_days_day", "day"),
)

# Migration 0006: the web console's sessions, shared by every worker and replica. The cookie's
# random id is never stored: rows are found by its sha256, and the key a session uses is sealed
# (AES-GCM) under a key derived from that id, so the table alone opens no session and shows no key.
console_sessions = Table(
    "console_sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),  # api | management | operator
    Column("prefix", String(16), nullable=False),
    Column("sealed_key", Text, nullable=False),
    Column("sealed_playground_key", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Index("ix_console_sessions_expires_at", "expires_at"),
)
