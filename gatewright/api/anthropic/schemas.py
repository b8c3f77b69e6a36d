"""Anthropic Messages request schemas (``POST /v1/messages``, ``/v1/messages/count_tokens``).

Fields follow Anthropic's Messages API reference. Only requests are validated with pydantic; responses
and stream events are plain dicts built in ``translate`` and ``stream`` (cheaper on the hot path).
``cache_control`` breakpoints are kept (forwarded to Anthropic-style upstreams, pinned by the
engine). Other unknown fields (``service_tier``, ``container`` …) are ignored, as optional features
a client may send without depending on them; known fields are strictly typed (``api.wire``).

Content given as a plain string is normalised into one text block before validation, so a bad block
is reported at its own path (``messages[0].content[1].source``) instead of as a failed string.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from gatewright.api.wire import MAX_COUNT, Int64, JsonObject

# Anthropic's tool-name rule (1-128 characters of letters, digits, `_` and `-`).
TOOL_NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,128}$"
MIN_THINKING_BUDGET = 1024


class Wire(BaseModel):
    model_config = ConfigDict(strict=True, allow_inf_nan=False, frozen=True, extra="ignore")


def _blocks(value: Any) -> Any:
    """``"hi"`` is shorthand for ``[{"type": "text", "text": "hi"}]`` everywhere content is accepted."""
    return [{"type": "text", "text": value}] if isinstance(value, str) else value


class CacheControl(Wire):
    """A prompt-cache breakpoint: the prompt up to and including this block is worth caching."""

    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] | None = None


class TextBlock(Wire):
    type: Literal["text"]
    text: str
    cache_control: CacheControl | None = None


class Base64Source(Wire):
    type: Literal["base64"]
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: str


class URLSource(Wire):
    type: Literal["url"]
    url: str


ImageSource = Annotated[Base64Source | URLSource, Field(discriminator="type")]


class ImageBlock(Wire):
    type: Literal["image"]
    source: ImageSource
    cache_control: CacheControl | None = None


ToolResultContent = Annotated[TextBlock | ImageBlock, Field(discriminator="type")]


class ToolResultBlock(Wire):
    type: Literal["tool_result"]
    tool_use_id: str
    content: Annotated[
        list[ToolResultContent], BeforeValidator(_blocks, json_schema_input_type=str | list[ToolResultContent])
    ] = Field(default_factory=list)
    is_error: bool = False
    cache_control: CacheControl | None = None


class ToolUseBlock(Wire):
    type: Literal["tool_use"]
    id: str
    name: str
    input: JsonObject
    cache_control: CacheControl | None = None


class ThinkingBlock(Wire):
    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(Wire):
    type: Literal["redacted_thinking"]
    data: str


UserBlock = Annotated[TextBlock | ImageBlock | ToolResultBlock, Field(discriminator="type")]
AssistantBlock = Annotated[
    TextBlock | ToolUseBlock | ThinkingBlock | RedactedThinkingBlock, Field(discriminator="type")
]


class UserMessage(Wire):
    role: Literal["user"]
    content: Annotated[list[UserBlock], BeforeValidator(_blocks, json_schema_input_type=str | list[UserBlock])]


class AssistantMessage(Wire):
    role: Literal["assistant"]
    content: Annotated[
        list[AssistantBlock], BeforeValidator(_blocks, json_schema_input_type=str | list[AssistantBlock])
    ]


MessageParam = Annotated[UserMessage | AssistantMessage, Field(discriminator="role")]


class Tool(Wire):
    name: str = Field(pattern=TOOL_NAME_PATTERN)
    description: str | None = None
    # Required for client tools; checked in translate, after the type, so that a server tool
    # (web_search_…, bash_…: their own ``type``, no schema) is refused as what it is.
    input_schema: JsonObject | None = None
    type: str | None = None
    strict: bool | None = None
    cache_control: CacheControl | None = None


class ToolChoiceAuto(Wire):
    type: Literal["auto"]
    disable_parallel_tool_use: bool = False


class ToolChoiceAny(Wire):
    type: Literal["any"]
    disable_parallel_tool_use: bool = False


class ToolChoiceTool(Wire):
    type: Literal["tool"]
    name: str
    disable_parallel_tool_use: bool = False


class ToolChoiceNone(Wire):
    type: Literal["none"]


ToolChoice = Annotated[ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone, Field(discriminator="type")]


class ThinkingEnabled(Wire):
    type: Literal["enabled"]
    budget_tokens: int = Field(ge=MIN_THINKING_BUDGET, le=MAX_COUNT)


class ThinkingDisabled(Wire):
    type: Literal["disabled"]


class ThinkingAdaptive(Wire):
    type: Literal["adaptive"]


Thinking = Annotated[ThinkingEnabled | ThinkingDisabled | ThinkingAdaptive, Field(discriminator="type")]


class Metadata(Wire):
    user_id: str | None = None


class CountTokensRequest(Wire):
    """``POST /v1/messages/count_tokens``: the conversation part of a Messages request."""

    model: str
    messages: list[MessageParam] = Field(min_length=1)
    system: Annotated[
        list[TextBlock] | None, BeforeValidator(_blocks, json_schema_input_type=str | list[TextBlock] | None)
    ] = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None


class MessagesRequest(CountTokensRequest):
    max_tokens: int = Field(ge=1, le=MAX_COUNT)
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=0, le=MAX_COUNT)
    metadata: Metadata | None = None
    stream: bool | None = False
    # gatewright extension: not in the Anthropic spec. Seeded sampling, so a conversation gives the
    # same text here and through Chat Completions (`extra_body={"seed": 7}` in the SDK).
    seed: Int64 | None = None
