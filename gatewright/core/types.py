"""The neutral request and response model every dialect translates to and from.

Plain frozen dataclasses with slots: they are built once per request on the hot path, so they
stay cheap, and they belong to no wire format (see aesthetics.md §8.4).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]
ReasoningEffort = Literal["none", "low", "medium", "high"]


CacheTTL = Literal["5m", "1h"]


@dataclass(frozen=True, slots=True)
class CacheMark:
    """A prompt-cache breakpoint (Anthropic's ``cache_control``): the prompt up to and including
    the part that carries it is worth keeping in a provider's cache (or the engine's)."""

    ttl: CacheTTL | None = None


@dataclass(frozen=True, slots=True)
class TextPart:
    text: str
    cache: CacheMark | None = None


@dataclass(frozen=True, slots=True)
class ImagePart:
    url: str  # http(s) URL or data: URL
    media_type: str | None = None
    cache: CacheMark | None = None


@dataclass(frozen=True, slots=True)
class ToolCallPart:
    id: str
    name: str
    arguments: str  # JSON text, as the model wrote it
    cache: CacheMark | None = None


@dataclass(frozen=True, slots=True)
class ToolResultPart:
    call_id: str
    content: str
    is_error: bool = False
    cache: CacheMark | None = None


@dataclass(frozen=True, slots=True)
class ThinkingPart:
    """Earlier reasoning of the assistant; ``signature`` is the provider's proof that it wrote it
    (Anthropic accepts earlier thinking back only with the signature it issued)."""

    text: str
    signature: str | None = None


@dataclass(frozen=True, slots=True)
class RedactedThinkingPart:
    """Reasoning a provider handed out encrypted (Anthropic's ``redacted_thinking``): opaque, only
    that provider can read it, and it must go back to it unchanged."""

    data: str


Part = TextPart | ImagePart | ToolCallPart | ToolResultPart | ThinkingPart | RedactedThinkingPart


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    parts: tuple[Part, ...]
    name: str | None = None

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str | None
    parameters: dict[str, Any]
    strict: bool = False
    cache: CacheMark | None = None  # a breakpoint after the tool definitions up to this one


@dataclass(frozen=True, slots=True)
class ToolChoice:
    mode: Literal["none", "auto", "required", "named"]
    name: str | None = None


TOOL_CHOICE_AUTO = ToolChoice("auto")
TOOL_CHOICE_NONE = ToolChoice("none")


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    kind: Literal["text", "json_object", "json_schema"]
    schema: dict[str, Any] | None = None
    name: str | None = None
    strict: bool = False


TEXT_FORMAT = ResponseFormat("text")


@dataclass(frozen=True, slots=True)
class Reasoning:
    """One neutral reasoning setting, mapped from every dialect's own switch."""

    effort: ReasoningEffort
    budget_tokens: int | None = None
    # True when the caller insists (an explicit thinking object rather than a hint):
    # a model that cannot reason then answers 400 instead of ignoring it.
    required: bool = False


@dataclass(frozen=True, slots=True)
class Sampling:
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    seed: int | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CoreRequest:
    model: str
    messages: tuple[Message, ...]
    sampling: Sampling = field(default_factory=Sampling)
    n: int = 1
    logprobs: bool = False
    top_logprobs: int = 0
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice = TOOL_CHOICE_NONE
    parallel_tool_calls: bool = True
    response_format: ResponseFormat = TEXT_FORMAT
    reasoning: Reasoning | None = None
    stream: bool = False
    user: str | None = None

    @property
    def cache_breakpoints(self) -> tuple[tuple[int, int], ...]:
        """(message index, part index) of every part that carries a cache mark, in prompt order:
        the prompt up to and including each is a prefix worth keeping cached."""
        return tuple(
            (i, k)
            for i, message in enumerate(self.messages)
            for k, part in enumerate(message.parts)
            if getattr(part, "cache", None) is not None
        )


@dataclass(slots=True)
class Usage:
    """Token counts of one request, all choices together.

    ``input_tokens`` is the whole prompt (OpenAI's ``prompt_tokens``); ``cached_tokens`` is the part
    of it read from a cache. ``output_tokens`` includes ``reasoning_tokens``. ``estimated`` marks
    counts the gateway had to guess (an upstream that reported none).
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_tokens: int = 0
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class TopLogprob:
    token: str
    logprob: float
    bytes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    token: str
    logprob: float
    bytes: tuple[int, ...]
    top: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True, slots=True)
class Cost:
    """What a request cost: integer credits (2,000,000 = 1 USD) and the same in USD."""

    credits: int
    usd: float


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str = ""


@dataclass(slots=True)
class Choice:
    index: int
    text: str = ""
    reasoning: str = ""
    reasoning_signature: str | None = None  # the provider's signature of ``reasoning``
    redacted_reasoning: list[str] = field(default_factory=list)  # opaque blocks, in order
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    stop_sequence: str | None = None
    logprobs: list[TokenLogprob] | None = None


@dataclass(slots=True)
class CoreResponse:
    id: str
    model: str
    created: int
    choices: list[Choice]
    usage: Usage
    cost: Cost | None = None
    deployment: str | None = None
    request_id: str | None = None  # the gateway's id of the request (x-request-id), beside the answer's id


# -- embeddings ---------------------------------------------------------------------------------

# One input to embed: text, or token ids of the model's own vocabulary (used as given).
EmbeddingInput = str | tuple[int, ...]


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    model: str
    inputs: tuple[EmbeddingInput, ...]
    dimensions: int | None = None  # shorter vectors, re-normalised, where the model allows it
    user: str | None = None
    # Keep at most this many tokens of each input instead of refusing longer ones (None: refuse).
    truncate: int | None = None


@dataclass(slots=True)
class Embeddings:
    """The vectors of one request, one row per input in input order (float32, unit length where
    the model normalises), and what producing them used and cost."""

    vectors: npt.NDArray[np.float32]
    usage: Usage
    cost: Cost | None = None
