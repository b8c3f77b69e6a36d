"""Runtime settings, from ``GATEWRIGHT_*`` environment variables (or the CLI's flags)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_CATALOG = Path(__file__).parent / "catalog" / "default.toml"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWRIGHT_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
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
    log_level: str = "info"
    # Tasks whose generation is not finished when the process stops are failed on restart.
    load_models_at_start: bool = True

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'gatewright.db').resolve()}"
