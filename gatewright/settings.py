"""Runtime settings, from ``GATEWRIGHT_*`` environment variables (or the CLI's flags).

A bad value is reported as one line naming the variable, the value and what is allowed
(``load_settings``); a ``GATEWRIGHT_*`` variable that names no setting is warned about, with the
setting it probably meant (``unknown_variables``).
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_CATALOG = Path(__file__).parent / "catalog" / "default.toml"
ENV_PREFIX = "GATEWRIGHT_"
# Variables read outside Settings (tests, the CLI's keys), not typos.
OTHER_VARIABLES = frozenset({"GATEWRIGHT_API_KEY", "GATEWRIGHT_MANAGEMENT_KEY", "GATEWRIGHT_OPENAI_SPEC"})

# URL schemes accepted for the store, and the async driver each one means.
_DATABASE_SCHEMES = {
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "sqlite": "sqlite+aiosqlite",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}
_REDIS_SCHEMES = ("redis", "rediss", "unix")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    # Processes serving the same port. More than one suits a proxy of upstreams (each process
    # loads its own copy of any embedded model); they share the store, and rate limits are exact
    # across them only with redis_url (without it each process enforces its share of a limit).
    workers: int = Field(default=1, ge=1, le=64)
    catalog: Path = DEFAULT_CATALOG
    data_dir: Path = Path(".gatewright")
    # Where assembled model weights are cached (one file per packaged model).
    model_cache: Path = Path.home() / ".cache" / "gatewright" / "models"
    database_url: str | None = None  # default: SQLite in data_dir
    redis_url: str | None = None  # rate limits shared by replicas when set
    # Off: a bare proxy with no keys, billing or limits (benchmarks, trusted networks).
    platform: bool = True
    # Each process holds credits of a key in bulk and reserves against them in memory, so a
    # request commits only its settlement (core.ledger_leases); off: a committed hold per request.
    credit_leases: bool = True
    # With credit leases: a finished request's charge is written to a journal file in data_dir
    # before its answer ends and committed to the store in groups after (store.journal); off:
    # the answer waits for its charge's commit.
    settlement_journal: bool = True
    starting_credits: int = Field(default=20_000_000, ge=0)  # 10 USD, for the account made on first start
    low_balance_threshold: int = Field(default=10_000, ge=0)
    default_requests_per_minute: int | None = Field(default=600, ge=1)
    default_tokens_per_minute: int | None = Field(default=2_000_000, ge=1)
    # Key lookups are cached this long; a key disabled on another replica stops working within it.
    auth_cache_seconds: float = Field(default=5.0, ge=0)
    # A job's webhook signing secret (task API); generated into data_dir when unset.
    webhook_secret: str | None = None
    # Internal receivers a caller's URL (a task's webhookURL) may reach: host names, addresses or
    # networks, comma-separated ("hooks.internal,10.1.2.0/24"). Everything not globally routable
    # (loopback, private, link-local, unique-local, cloud metadata) is refused unless named here.
    outbound_allow: str = ""
    # A request body over this many bytes is refused with 413 before it is read further.
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    # Web origins allowed to call the gateway from a browser, comma-separated ("*" for any).
    # Empty (the default): no CORS headers at all, so browsers on other origins are refused.
    cors_origins: str = ""
    # When set, GET /metrics needs "Authorization: Bearer <metrics_key>".
    metrics_key: str | None = None
    # How long a process may go silent before another takes over its unfinished tasks (task API).
    task_lease_seconds: float = Field(default=120.0, gt=0)
    # An idle keep-alive connection is closed after this long. Longer than clients keep theirs idle
    # (httpx, and so the official SDKs: 5 s): were both 5 s, a client could send a request on a
    # connection at the moment the server closes it, and get a reset instead of an answer.
    keep_alive_seconds: int = Field(default=75, ge=1)
    # Stored responses of the Responses API (`store: true`) are kept this long, then removed.
    responses_retention_days: float = Field(default=30.0, gt=0)
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    # text: one readable line per record; json: one JSON object per line (for log collectors).
    log_format: Literal["text", "json"] = "text"
    # Off: embedded models are never loaded (for tools and tests that do not generate with them).
    load_models_at_start: bool = True
    # Stopping (SIGTERM): /health/ready answers 503 at once, new connections are still taken for
    # drain_seconds (so a load balancer notices and stops sending), then no more are accepted and
    # requests in flight get up to shutdown_timeout seconds to finish; what is left is cut, and a
    # cut stream is billed for what it produced.
    drain_seconds: float = Field(default=0.0, ge=0, le=600)
    shutdown_timeout: float = Field(default=30.0, ge=0, le=3600)

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        scheme, sep, rest = value.partition("://")
        if not sep or scheme not in _DATABASE_SCHEMES:
            raise ValueError("allowed: postgresql://user:password@host/db or sqlite:///path/to/file.db")
        return f"{_DATABASE_SCHEMES[scheme]}://{rest}"

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        if value.partition("://")[0] not in _REDIS_SCHEMES:
            raise ValueError("allowed: redis://host:6379/0, rediss://… (TLS) or unix:///path/to/socket")
        return value

    @property
    def single_process(self) -> bool:
        """True when this process is the only one using the store: what an earlier run left
        open is certainly abandoned. Otherwise only what outlived its lease is."""
        return self.workers == 1 and (self.database_url is None or self.database_url.startswith("sqlite"))

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'gatewright.db').resolve()}"


class SettingsError(ValueError):
    """Settings that cannot be used; ``lines`` holds one readable line per problem."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("; ".join(lines))
        self.lines = lines


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment and ``overrides`` (CLI flags), or ``SettingsError``."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise SettingsError([_describe(problem, overrides) for problem in error.errors()]) from None


def _describe(problem: Any, overrides: Mapping[str, Any]) -> str:
    name = str(problem["loc"][0]) if problem["loc"] else "?"
    source = f"--{name.replace('_', '-')}" if name in overrides else f"{ENV_PREFIX}{name.upper()}"
    value = problem.get("input")
    message = str(problem["msg"]).removeprefix("Value error, ")
    return f"{source}={value!r}: {message}"


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """One warning per ``GATEWRIGHT_*`` variable that is no setting, with the likely intended one."""
    environ = os.environ if environ is None else environ
    known = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    warnings = []
    for variable in sorted(environ):
        if not variable.startswith(ENV_PREFIX) or variable in known or variable in OTHER_VARIABLES:
            continue
        close = difflib.get_close_matches(variable, sorted(known), n=1, cutoff=0.75)
        hint = f" (did you mean {close[0]}?)" if close else ""
        warnings.append(f"unknown setting {variable} is ignored{hint}")
    return warnings


LOG_HANDLER = "gatewright"


def configure_logging(settings: Settings, *, warn_unknown: bool = True) -> None:
    from gatewright.logs import CutAtShutdown, JsonFormatter

    handler = logging.StreamHandler()
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    handler.set_name(LOG_HANDLER)
    root = logging.getLogger()
    # Replaces the handler an earlier call installed; leaves others alone (a test runner's capture).
    root.handlers[:] = [h for h in root.handlers if h.get_name() != LOG_HANDLER] + [handler]
    root.setLevel(settings.log_level.upper())
    logging.getLogger("alembic").setLevel(logging.WARNING)
    server = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, CutAtShutdown) for f in server.filters):
        server.addFilter(CutAtShutdown())
    for warning in unknown_variables() if warn_unknown else ():
        logging.getLogger("gatewright.settings").warning(warning)
