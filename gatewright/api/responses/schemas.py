"""OpenAI Responses API request schema (``CreateResponse`` in OpenAI's OpenAPI spec).

Unknown fields are refused (400 naming the field): a Responses request has many switches, and one
silently dropped would change the answer without the caller knowing. Fields gatewright accepts but
cannot honour are declared here and refused in ``translate`` with a message that says why; fields
that cannot change the answer (``prompt_cache_key``, ``include`` of tool results no tool here
makes) are accepted and have no effect.

Item and part types gatewright does not serve (``input_file``, hosted tool calls, ...) parse as
``Unsupported`` so the refusal names the type rather than an unknown field of it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError

from gatewright.api.http import invalid_from, shorten, shown_value
from gatewright.api.wire import MAX_COUNT, JsonAny, JsonObject, read_json
from gatewright.core.errors import InvalidRequest

NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"
ItemStatus = Literal["in_progress", "completed", "incomplete"]
Effort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]


class Wire(BaseModel):
    model_config = ConfigDict(strict=True, allow_inf_nan=False, frozen=True, extra="forbid")


class Unsupported(BaseModel):
    """A part, item or tool of a type gatewright does not serve; refused by ``translate``."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False, frozen=True, extra="allow")
    type: str


def _by_type(known: frozenset[str], default: str | None = None) -> Any:
    """A discriminator that sends unknown ``type`` values to ``Unsupported`` (tag ``other``)."""

    def pick(value: Any) -> str | None:
        kind = value.get("type", default) if isinstance(value, dict) else getattr(value, "type", default)
        if kind is None:
            return None
        return kind if isinstance(kind, str) and kind in known else "other"  # "other" refuses a non-string

    return Discriminator(pick)


# -- content parts --------------------------------------------------------------------------


class InputText(Wire):
    type: Literal["input_text"]
    text: str


class InputImage(Wire):
    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: Literal["auto", "low", "high", "original"] = "auto"


class OutputText(Wire):
    type: Literal["output_text"]
    text: str
    annotations: list[JsonAny] = Field(default_factory=list)
    logprobs: list[JsonAny] | None = None


class Refusal(Wire):
    type: Literal["refusal"]
    refusal: str


ContentPart = Annotated[
    Annotated[InputText, Tag("input_text")]
    | Annotated[InputImage, Tag("input_image")]
    | Annotated[OutputText, Tag("output_text")]
    | Annotated[Refusal, Tag("refusal")]
    | Annotated[Unsupported, Tag("other")],
    _by_type(frozenset({"input_text", "input_image", "output_text", "refusal"})),
]


class ReasoningText(Wire):
    type: Literal["reasoning_text"]
    text: str


class SummaryText(Wire):
    type: Literal["summary_text"]
    text: str


# -- input items ----------------------------------------------------------------------------


class MessageItem(Wire):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]
    id: str | None = None
    status: ItemStatus | None = None
    phase: Literal["commentary", "final_answer"] | None = None


class FunctionCallItem(Wire):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str
    arguments: str
    id: str | None = None
    status: ItemStatus | None = None


class FunctionCallOutputItem(Wire):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1, max_length=64)
    output: str | list[ContentPart]
    id: str | None = None
    status: ItemStatus | None = None


class ReasoningItem(Wire):
    type: Literal["reasoning"]
    id: str | None = None
    summary: list[SummaryText] = Field(default_factory=list)
    content: list[ReasoningText] | None = None
    encrypted_content: str | None = None
    status: ItemStatus | None = None


ITEM_TYPES = frozenset({"message", "function_call", "function_call_output", "reasoning"})

InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")]
    | Annotated[Unsupported, Tag("other")],
    # An item without a type is a message (OpenAI's "easy input message").
    _by_type(ITEM_TYPES, default="message"),
]

# -- tools and formats ----------------------------------------------------------------------


class FunctionTool(Wire):
    type: Literal["function"]
    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = None
    parameters: JsonObject | None = None
    strict: bool | None = None


Tool = Annotated[
    Annotated[FunctionTool, Tag("function")] | Annotated[Unsupported, Tag("other")],
    _by_type(frozenset({"function"})),
]


class FunctionChoice(Wire):
    type: Literal["function"]
    name: str


ToolChoice = Annotated[
    Annotated[FunctionChoice, Tag("function")] | Annotated[Unsupported, Tag("other")],
    _by_type(frozenset({"function"})),
]


class TextFormat(Wire):
    type: Literal["text"]


class JsonObjectFormat(Wire):
    type: Literal["json_object"]


class JsonSchemaFormat(Wire):
    type: Literal["json_schema"]
    name: str = Field(pattern=NAME_PATTERN)
    schema_: JsonObject = Field(alias="schema")
    description: str | None = None
    strict: bool | None = None


Format = Annotated[TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")]


class TextParam(Wire):
    format: Format | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningParam(Wire):
    effort: Effort | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None


class StreamOptions(Wire):
    include_obfuscation: bool | None = None


Include = Literal[
    "file_search_call.results",
    "web_search_call.results",
    "web_search_call.action.sources",
    "message.input_image.image_url",
    "computer_call_output.output.image_url",
    "code_interpreter_call.outputs",
    "reasoning.encrypted_content",
    "message.output_text.logprobs",
]


class CreateResponse(Wire):
    model: str = Field(min_length=1)
    input: str | list[InputItem] | None = None
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=16, le=MAX_COUNT)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[Tool] | None = Field(None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    max_tool_calls: int | None = Field(None, ge=1, le=MAX_COUNT)  # counts built-in tool calls: none exist here
    text: TextParam | None = None
    reasoning: ReasoningParam | None = None
    include: list[Include] | None = None
    store: bool | None = None
    previous_response_id: str | None = None
    metadata: dict[str, str] | None = Field(None, max_length=16)
    user: str | None = None
    safety_identifier: str | None = Field(None, max_length=64)
    prompt_cache_key: str | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    # Codex CLI's session ids and the like: labels for the caller's logs, never read by the model.
    client_metadata: dict[str, str] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    service_tier: str | None = None
    truncation: Literal["auto", "disabled"] | None = None
    # Known to OpenAI, refused by ``translate`` with the reason (never dropped silently).
    background: bool | None = None
    conversation: JsonAny = None
    prompt: JsonAny = None
    context_management: JsonAny = None
    moderation: JsonAny = None


# Union tags pydantic puts into error locations; they are not fields.
_TAGS = frozenset(
    {"other", "str", *ITEM_TYPES, "input_text", "input_image", "output_text", "refusal", "function"}
    | {"json_schema", "json_object"}
)


def _param(loc: tuple[Any, ...]) -> str | None:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part not in _TAGS and not str(part).startswith(("list[", "function-", "literal[", "tagged-union[")):
            out += f".{part}" if out else str(part)
    return out or None


def parse_request(body: bytes) -> CreateResponse:
    """``CreateResponse`` from a body, or a 400 naming the field that is wrong.

    Items and parts are unions, and pydantic reports every branch's complaint; the branch that got
    furthest into the value (the longest location) is the one the caller meant."""
    try:
        return CreateResponse.model_validate(read_json(body))
    except ValidationError as error:
        errors = error.errors(include_url=False)
        deepest = max(errors, key=lambda e: len(e["loc"]))
        kind, param = deepest["type"], shorten(_param(tuple(deepest["loc"])))
        if kind in ("json_invalid", "model_type") or param is None:
            raise invalid_from(error) from None
        if kind == "missing":
            message = f"Missing required parameter: '{param}'."
            raise InvalidRequest(message, param=param, code="missing_required_parameter") from None
        if kind == "union_tag_not_found" or "discriminator" in deepest["msg"]:
            message = f"Missing required parameter: '{param}.type'."
            raise InvalidRequest(message, param=f"{param}.type", code="missing_required_parameter") from None
        if kind == "extra_forbidden":
            raise InvalidRequest(f"Unrecognized request argument supplied: '{param}'.", param=param) from None
        got = shown_value(deepest.get("input"))
        shown = f" (got {got})" if got is not None else ""
        message = f"Invalid '{param}': {deepest['msg']}{shown}."
        raise InvalidRequest(message, param=param, code="invalid_value") from None
