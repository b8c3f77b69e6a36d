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
