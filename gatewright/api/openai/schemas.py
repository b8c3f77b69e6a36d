"""OpenAI Chat Completions request schema, in the order of the reference (000 OpenAPI, OpenAI spec).

Only requests are validated with pydantic; responses are built as plain dicts in ``translate`` and
``stream`` because that is several times cheaper on the hot path. Every field of OpenAI's request
is declared here (which ones are honoured, refused or ignored: docs/openai-chat.md) and strictly
typed (``api.wire``); fields OpenAI does not define are ignored, as OpenAI ignores them.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from gatewright.api.wire import MAX_COUNT, Int64, JsonObject

NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"


class Wire(BaseModel):
    model_config = ConfigDict(strict=True, allow_inf_nan=False, frozen=True, extra="ignore")


class CacheControl(Wire):
    """Anthropic's prompt-caching breakpoint, as OpenRouter-style clients put it on content parts."""

    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] | None = None


class TextContent(Wire):
    type: Literal["text"]
    text: str
    cache_control: CacheControl | None = None


class ImageURL(Wire):
    url: str
    detail: Literal["auto", "low", "high"] = "auto"


class ImageContent(Wire):
    type: Literal["image_url"]
    image_url: ImageURL
    cache_control: CacheControl | None = None


class InputAudio(Wire):
    data: str
    format: str


class AudioContent(Wire):
    type: Literal["input_audio"]
    input_audio: InputAudio


class FileContent(Wire):
    type: Literal["file"]
    file: JsonObject


class RefusalContent(Wire):
    type: Literal["refusal"]
    refusal: str


UserPart = Annotated[TextContent | ImageContent | AudioContent | FileContent, Field(discriminator="type")]
AssistantPart = Annotated[TextContent | RefusalContent, Field(discriminator="type")]


class SystemMessage(Wire):
    role: Literal["system"]
    content: str | list[TextContent]
    name: str | None = None


class DeveloperMessage(Wire):
    role: Literal["developer"]
    content: str | list[TextContent]
    name: str | None = None


class UserMessage(Wire):
    role: Literal["user"]
    content: str | list[UserPart]
    name: str | None = None


class ReasoningDetail(Wire):
    type: Literal["reasoning.text", "reasoning.encrypted", "reasoning.summary"]
    text: str | None = None
    signature: str | None = None
    data: str | None = None
    summary: str | None = None


class FunctionCall(Wire):
    name: str
    arguments: str


class ToolCall(Wire):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class AssistantMessage(Wire):
    role: Literal["assistant"]
    content: str | list[AssistantPart] | None = None
    name: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None
    # gatewright extension, as GLM and vLLM send it back: the assistant's earlier reasoning.
    reasoning_content: str | None = None
    # OpenRouter's convention for reasoning a provider signed or encrypted (Anthropic's thinking
    # signatures, redacted thinking): sent back unchanged so the provider accepts it again.
    reasoning_details: list[ReasoningDetail] | None = None


class ToolMessage(Wire):
    role: Literal["tool"]
    content: str | list[TextContent]
    tool_call_id: str
    name: str | None = None


Message = Annotated[
    SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage,
    Field(discriminator="role"),
]


class FunctionDef(Wire):
    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = None
    parameters: JsonObject | None = None
    strict: bool | None = None


class ToolDef(Wire):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(Wire):
    name: str


class NamedToolChoice(Wire):
    type: Literal["function"]
    function: NamedFunction


class AllowedTools(Wire):
    mode: Literal["auto", "required"]
    tools: list[JsonObject]


class AllowedToolsChoice(Wire):
    type: Literal["allowed_tools"]
    allowed_tools: AllowedTools


class NamedCustom(Wire):
    name: str


class CustomToolChoice(Wire):
    type: Literal["custom"]
    custom: NamedCustom


ToolChoiceObject = Annotated[NamedToolChoice | AllowedToolsChoice | CustomToolChoice, Field(discriminator="type")]


class JsonSchemaFormat(Wire):
    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = None
    schema_: JsonObject | None = Field(None, alias="schema")
    strict: bool | None = None


class TextFormat(Wire):
    type: Literal["text"]


class JsonObjectFormat(Wire):
    type: Literal["json_object"]


class JsonSchemaResponseFormat(Wire):
    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaResponseFormat, Field(discriminator="type")]


class StreamOptions(Wire):
    include_usage: bool = False
    include_obfuscation: bool | None = None  # padding against side channels: not needed, ignored


class ReasoningOptions(Wire):
    """OpenRouter/AI-ML-API style ``reasoning`` object (003 L28178-28194)."""

    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    max_tokens: int | None = Field(None, ge=0, le=MAX_COUNT)
    exclude: bool = False
    enabled: bool | None = None


class ThinkingOptions(Wire):
    """Anthropic-style ``thinking`` object accepted on chat completions (003 L21467-21469)."""

    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = Field(None, ge=0, le=MAX_COUNT)


class ChatCompletionRequest(Wire):
    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, le=MAX_COUNT)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_COUNT)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    tools: list[ToolDef] | None = Field(None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | ToolChoiceObject | None = None
    parallel_tool_calls: bool | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0.01, le=1)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    seed: Int64 | None = None
    response_format: ResponseFormat | None = None
    n: int | None = Field(None, ge=1, le=128)
    stop: str | list[str] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    user: str | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    reasoning: ReasoningOptions | None = None
    thinking: ThinkingOptions | None = None
    # Qwen-style switches (003 L1521, L20525-20532).
    enable_thinking: bool | None = None
    thinking_budget: int | None = Field(None, ge=0, le=MAX_COUNT)
    # gatewright extension, llama.cpp style: sample from the k most likely tokens only.
    top_k: int | None = Field(None, ge=0, le=MAX_COUNT)
    # OpenAI fields gatewright does not act on. docs/openai-chat.md has the table: metadata only
    # (ignored), or refused by translate with a 400 naming the field when a value would change
    # the answer.
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_options: JsonObject | None = None
    prompt_cache_retention: str | None = None
    logit_bias: dict[str, float] | None = None
    modalities: list[str] | None = None
    audio: JsonObject | None = None
    prediction: JsonObject | None = None
    web_search_options: JsonObject | None = None
    verbosity: str | None = None
    moderation: JsonObject | None = None
    functions: list[JsonObject] | None = None
    function_call: str | JsonObject | None = None
