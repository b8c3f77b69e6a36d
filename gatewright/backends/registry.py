"""Catalog ``backend`` names → the classes that serve them. The only place that maps names."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from gatewright.backends.options import (
    AnthropicOptions,
    EmbedderOptions,
    FakeOptions,
    LlamaCppOptions,
    OpenAIOptions,
)
from gatewright.core.backend import Backend
from gatewright.core.catalog import BackendRules, Catalog, CatalogError, Deployment, ModelEntry


@dataclass(frozen=True)
class BackendEnv:
    """What backends get from the application besides their own deployment."""

    model_cache: Path


# name → "module:Class", imported only when a catalog uses it (llama_cpp is heavy to import).
BACKENDS: dict[str, str] = {
    "llamacpp": "gatewright.backends.llamacpp.backend:LlamaCppBackend",
    "openai": "gatewright.backends.openai_compat:OpenAICompatBackend",
    "anthropic": "gatewright.backends.anthropic_upstream:AnthropicBackend",
    "fake": "gatewright.backends.fake:FakeBackend",
    "embedder": "gatewright.backends.embedder.backend:EmbedderBackend",
}


# What each backend asks of a deployment (fields it needs, its typed options): checked when the
# catalog is loaded, so a typo stops the start instead of surfacing on a request.
REQUIRED_FIELDS: dict[str, BackendRules] = {
    "llamacpp": BackendRules(("path",), LlamaCppOptions),
    "openai": BackendRules(("base_url",), OpenAIOptions),
    "anthropic": BackendRules(("base_url",), AnthropicOptions),
    "fake": BackendRules((), FakeOptions),
    "embedder": BackendRules(("path",), EmbedderOptions),
}


def backend_class(name: str) -> type:
    target = BACKENDS.get(name)
    if target is None:
        raise CatalogError(f"unknown backend {name!r}; known backends: {', '.join(sorted(BACKENDS))}")
    module_name, _, class_name = target.partition(":")
    cls: type = getattr(importlib.import_module(module_name), class_name)
    return cls


def build_backend(deployment: Deployment, entry: ModelEntry, env: BackendEnv) -> Backend:
    backend: Backend = backend_class(deployment.backend)(deployment, entry, env)
    return backend


def build_backends(catalog: Catalog, env: BackendEnv) -> dict[str, Backend]:
    """One backend per deployment, keyed by deployment name; unknown names fail at start."""
    for name in catalog.backends_in_use():
        backend_class(name)
    return {d.name: build_backend(d, e, env) for e in catalog for d in e.deployments}
