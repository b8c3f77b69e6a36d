"""Runtime settings, from ``GATEWRIGHT_*`` environment variables (or the CLI's flags)."""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_CATALOG = Path(__file__).parent / "catalog" / "default.toml"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWRIGHT_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
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
    # Stored responses of the Responses API (`store: true`) are kept this long, then removed.
    responses_retention_days: float = Field(default=30.0, gt=0)
    log_level: str = "info"
    # Tasks whose generation is not finished when the process stops are failed on restart.
    load_models_at_start: bool = True

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


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
