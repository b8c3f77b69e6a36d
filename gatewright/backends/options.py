"""Each backend's ``options`` table, typed: a typo or a wrong value in a catalog option fails the
catalog load with its path (``models[1] (m).options.reasoning_stlye: unknown field``), like every
other catalog field. Kept apart from the backends themselves so the catalog can be checked without
importing an engine."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# Where an OpenAI-compatible upstream expects the reasoning switch.
ReasoningStyle = Literal["reasoning_effort", "thinking", "chat_template_kwargs", "none"]


class BackendOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OpenAIOptions(BackendOptions):
    reasoning_style: ReasoningStyle = "reasoning_effort"
    # Forward Anthropic-style ``cache_control`` breakpoints on content parts and tools (servers in
    # front of Anthropic models, such as OpenRouter or LiteLLM, accept them; others may refuse them).
    cache_control: bool = False


class AnthropicOptions(BackendOptions):
    anthropic_version: str = "2023-06-01"
    auth: Literal["x-api-key", "bearer"] = "x-api-key"


class FakeOptions(BackendOptions):
    delay: float = Field(default=0.0, ge=0, allow_inf_nan=False)  # seconds per token
    fail_status: int | None = Field(default=None, ge=100, le=599)  # fail before the first event
    fail_after: int | None = Field(default=None, ge=0)  # fail after this many tokens


class LlamaCppOptions(BackendOptions):
    """The embedded engine's knobs; a field left out takes the engine's own default
    (backends/llamacpp/backend.py), so only what a catalog sets is checked here."""

    n_ctx: int | None = Field(default=None, ge=16)  # tokens of context per sequence
    n_threads: int | None = Field(default=None, ge=1)
    n_batch: int | None = Field(default=None, ge=1)
    parallel: int | None = Field(default=None, ge=1, le=64)  # sequences decoded together
    prefill_chunk_busy: int | None = Field(default=None, ge=16)
    prefill_budget_idle: int | None = Field(default=None, ge=16)
    reuse_granularity: int | None = Field(default=None, ge=1)
    prefix_cache_mb: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    prefix_cache_min_tokens: int | None = Field(default=None, ge=0)
    max_queue: int | None = Field(default=None, ge=1)
    chat_template: str | None = None
    template_kwargs: dict[str, object] | None = None
    tool_syntax: str | None = None  # its known values are the engine's (checked when it starts)


class EmbedderOptions(BackendOptions):
    workers: int | None = Field(default=None, ge=1)  # single-threaded llama.cpp workers
    batch_tokens: int | None = Field(default=None, ge=1)
    max_queue_inputs: int | None = Field(default=None, ge=1)
