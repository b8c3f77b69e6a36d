"""Task API request schemas, in the order of the reference (seed 002, conformance.md §1).

Unknown fields are refused (``unknownParameter``): this dialect's parameters are a published list,
and a misspelt one silently ignored would change the output without a word. Responses are plain
dicts built in ``translate``.
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, RootModel, field_validator, model_validator

from gatewright.api.wire import MAX_COUNT, JsonObject

UUID_V4 = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-4[0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}$"
TOOL_NAME = r"^[a-zA-Z0-9_-]{1,64}$"
MAX_SEED = 2**63 - 1
MAX_TASKS = 64  # per request

DeliveryMethod = Literal["sync", "async", "stream"]
ThinkingLevel = Literal["none", "low", "medium", "high"]


class Wire(BaseModel):
    model_config = ConfigDict(strict=True, allow_inf_nan=False, frozen=True, extra="forbid", populate_by_name=True)


class ToolUse(Wire):
    """A tool call, in an assistant message and in a result: ``{id, name, input}``."""

    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: JsonObject = Field(default_factory=dict)


class UserMessage(Wire):
    role: Literal["user"]
    content: str = Field(min_length=1)


class AssistantMessage(Wire):
    role: Literal["assistant"]
    content: str | None = Field(None, min_length=1)
    tools: list[ToolUse] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _says_something(self) -> AssistantMessage:
        if self.content is None and not self.tools:
            raise ValueError("an assistant message needs 'content' or 'tools'")
        return self


class ToolMessage(Wire):
    """A tool's answer to the call ``id`` of an earlier assistant message."""

    role: Literal["tool"]
    id: str = Field(min_length=1)
    content: str = Field(min_length=1)


Message = Annotated[UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")]


class Settings(Wire):
    systemPrompt: str | None = Field(None, min_length=1, max_length=200_000)
    temperature: float | None = Field(None, ge=0, le=1)
    topP: float | None = Field(None, ge=0.01, le=1)
    topK: int | None = Field(None, ge=0, le=MAX_COUNT)
    frequencyPenalty: float | None = Field(None, ge=-2, le=2)
    presencePenalty: float | None = Field(None, ge=-2, le=2)
    maxTokens: int | None = Field(None, ge=1, le=131_072)
    stopSequences: list[Annotated[str, Field(min_length=1, max_length=50)]] | None = Field(None, max_length=4)
    thinkingLevel: ThinkingLevel | None = None


class ToolChoice(Wire):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _named_when_tool(self) -> ToolChoice:
        if self.type == "tool" and not self.name:
            raise ValueError("'name' is required when type is 'tool'")
        return self


class ToolDef(Wire):
    """A function tool, or a built-in one (``search``, ``codeInterpreter``) run by a provider."""

    type: Literal["function", "search", "codeInterpreter"]
    name: str | None = Field(None, pattern=TOOL_NAME)
    description: str | None = None
    schema_: JsonObject | None = Field(None, alias="schema")


class TextInferenceTask(Wire):
    taskType: Literal["textInference"]
    taskUUID: str = Field(pattern=UUID_V4)
    webhookURL: str | None = Field(None, min_length=1, max_length=2048)
    deliveryMethod: DeliveryMethod = "sync"
    includeCost: bool = False
    includeUsage: bool = False
    numberResults: int = Field(1, ge=1, le=4)
    model: str = Field(min_length=1)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    messages: list[Message] = Field(min_length=1)
    settings: Settings = Settings()
    toolChoice: ToolChoice | None = None
    tools: list[ToolDef] | None = Field(None, min_length=1, max_length=128)
    outputFormat: Literal["TEXT"] | None = None

    @field_validator("webhookURL")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http:// or https:// URL")
        return value


class GetResponseTask(Wire):
    taskType: Literal["getResponse"]
    taskUUID: str = Field(pattern=UUID_V4)
    numberResults: int | None = Field(None, ge=1, le=4)  # the legacy SDK sends it; every result is returned


class PingTask(Wire):
    taskType: Literal["ping"]
    ping: Literal[True]


class AuthenticationTask(Wire):
    taskType: Literal["authentication"]
    apiKey: str = Field(min_length=1)
    connectionSessionUUID: str | None = None  # WebSocket sessions; accepted and unused over HTTP


AnyTask = Annotated[
    TextInferenceTask | GetResponseTask | PingTask | AuthenticationTask, Field(discriminator="taskType")
]


class TaskArray(RootModel[list[AnyTask]]):
    """The request body, for the OpenAPI document: tasks are validated one by one as they run, so
    that one bad task of an array does not fail the others."""

    root: list[AnyTask] = Field(min_length=1, max_length=MAX_TASKS)
