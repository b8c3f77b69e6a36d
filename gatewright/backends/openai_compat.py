"""Any OpenAI-compatible server as an upstream: vLLM, SGLang, llama.cpp, GLM's own API, ...

A streaming caller's request is sent streaming, with ``include_usage`` so billing uses the upstream's
own counts; a caller who waits is answered from the upstream's whole answer, read by the same code
as one chunk of a stream whose ``delta`` is the ``message`` (``_Reframer.chunk``). Tool-call deltas
are re-framed: whatever the upstream repeats, the caller sees one start per call and then argument
fragments. Deployment options (``OpenAIOptions``): ``reasoning_style``, and ``cache_control`` to
forward Anthropic-style cache breakpoints to servers that accept them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from gatewright.backends import openai_embeddings
from gatewright.backends.options import OpenAIOptions, ReasoningStyle
from gatewright.backends.registry import BackendEnv
from gatewright.backends.upstream import (
    HttpUpstream,
    Streaming,
    stream_error,
)
from gatewright.backends.usage import openai_usage
from gatewright.core.backend import CallContext
from gatewright.core.catalog import Deployment, ModelEntry
from gatewright.core.errors import UpstreamError
from gatewright.core.events import (
    ChoiceEnd,
    Event,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    UsageReport,
)
from gatewright.core.ids import tool_call_id
from gatewright.core.types import (
    CacheMark,
    CoreRequest,
    EmbeddingRequest,
    Embeddings,
    FinishReason,
    ImagePart,
    Message,
    Reasoning,
    TextPart,
    TokenLogprob,
    ToolCallPart,
    ToolResultPart,
    TopLogprob,
    Usage,
)

FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
    "eos": "stop",
    "end_turn": "stop",
    "max_tokens": "length",
}

# Where an upstream expects the reasoning switch (deployment option ``reasoning_style``).
REASONING_STYLES: dict[ReasoningStyle, Callable[[Reasoning], dict[str, Any]]] = {
    "reasoning_effort": lambda r: {"reasoning_effort": r.effort} if r.effort != "none" else {},
    "thinking": lambda r: {"thinking": {"type": "disabled" if r.effort == "none" else "enabled"}},
    "chat_template_kwargs": lambda r: {"chat_template_kwargs": {"enable_thinking": r.effort != "none"}},
    "none": lambda r: {},
}

DEFAULTS = OpenAIOptions()

# Upstream field names carrying reasoning text, in order of preference.
REASONING_FIELDS = ("reasoning_content", "reasoning")


def _marked(part: dict[str, Any], mark: CacheMark | None, caching: bool) -> dict[str, Any]:
    if caching and mark is not None:
        part["cache_control"] = {"type": "ephemeral", "ttl": mark.ttl} if mark.ttl else {"type": "ephemeral"}
    return part


def _content(message: Message, caching: bool) -> str | list[dict[str, Any]]:
    """A string, or content parts where an image or a forwarded cache breakpoint needs them."""
    marked = caching and any(getattr(p, "cache", None) is not None for p in message.parts)
    if not marked and not any(isinstance(p, ImagePart) for p in message.parts):
        return message.text
    parts: list[dict[str, Any]] = []
    for part in message.parts:
        if isinstance(part, TextPart):
            parts.append(_marked({"type": "text", "text": part.text}, part.cache, caching))
        elif isinstance(part, ImagePart):
            parts.append(_marked({"type": "image_url", "image_url": {"url": part.url}}, part.cache, caching))
    return parts


def _tool_result(part: ToolResultPart, caching: bool) -> dict[str, Any]:
    content: str | list[dict[str, Any]] = part.content
    if caching and part.cache is not None:
        content = [_marked({"type": "text", "text": part.content}, part.cache, caching)]
    return {"role": "tool", "tool_call_id": part.call_id, "content": content}


def wire_messages(messages: tuple[Message, ...], caching: bool = False) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "tool":
            out.extend(_tool_result(p, caching) for p in message.parts if isinstance(p, ToolResultPart))
            continue
        item: dict[str, Any] = {"role": message.role, "content": _content(message, caching)}
        calls = [p for p in message.parts if isinstance(p, ToolCallPart)]
        if calls:
            if message.text:
                item["content"] = message.text
            else:  # omitted rather than null: llama_cpp.server refuses `"content": null` (OpenAI takes both)
                del item["content"]
            item["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls
            ]
        if message.name:
            item["name"] = message.name
        out.append(item)
    return out


def wire_request(request: CoreRequest, upstream_model: str, options: OpenAIOptions = DEFAULTS) -> dict[str, Any]:
    """The upstream request: streaming, with its usage, when the caller streams; else whole."""
    s = request.sampling
    caching = options.cache_control
    body: dict[str, Any] = {"model": upstream_model, "messages": wire_messages(request.messages, caching)}
    optional = {
        "temperature": s.temperature,
        "top_p": s.top_p,
        "frequency_penalty": s.frequency_penalty,
        "presence_penalty": s.presence_penalty,
        "seed": s.seed,
        "max_tokens": s.max_tokens,
        "stop": list(s.stop) or None,
        "n": request.n if request.n != 1 else None,
        "user": request.user,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    if s.top_k:
        body["top_k"] = s.top_k
    if request.logprobs:
        body["logprobs"] = True
        body["top_logprobs"] = request.top_logprobs
    if request.tools:
        body["tools"] = [
            _marked(
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description or "",
                        "parameters": t.parameters,
                        **({"strict": True} if t.strict else {}),
                    },
                },
                t.cache,
                caching,
            )
            for t in request.tools
        ]
        choice = request.tool_choice
        body["tool_choice"] = (
            {"type": "function", "function": {"name": choice.name}} if choice.mode == "named" else choice.mode
        )
        body["parallel_tool_calls"] = request.parallel_tool_calls
    fmt = request.response_format
    if fmt.kind == "json_object":
        body["response_format"] = {"type": "json_object"}
    elif fmt.kind == "json_schema":
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": fmt.name or "response", "schema": fmt.schema, "strict": fmt.strict},
        }
    if request.reasoning is not None:
        body.update(REASONING_STYLES[options.reasoning_style](request.reasoning))
    body["stream"] = request.stream
    if request.stream:
        body["stream_options"] = {"include_usage": True}
    return body


def _logprobs(data: Any) -> tuple[TokenLogprob, ...] | None:
    if not isinstance(data, dict) or not isinstance(data.get("content"), list):
        return None
    out = []
    for item in data["content"]:
        token = str(item.get("token", ""))
        raw = item.get("bytes") or list(token.encode())
        top = tuple(
            TopLogprob(
                str(t.get("token", "")),
                float(t.get("logprob", 0.0)),
                tuple(t.get("bytes") or str(t.get("token", "")).encode()),
            )
            for t in item.get("top_logprobs") or ()
        )
        out.append(TokenLogprob(token, float(item.get("logprob", 0.0)), tuple(raw), top))
    return tuple(out)


class _Reframer:
    """Turns OpenAI message deltas (streamed or whole) into neutral events.

    Whatever the upstream repeats on later fragments of a tool call (``llama_cpp.server`` resends
    id, type and name every time), the caller sees one ``ToolCallStart`` per call, with a dense
    index, then argument fragments only.
    """

    __slots__ = ("calls", "chars", "ctx", "deployment", "ended", "pieces", "reported", "seen")

    def __init__(self, ctx: CallContext, deployment: Deployment) -> None:
        self.ctx = ctx
        self.deployment = deployment
        self.reported: dict[str, Any] | None = None  # the upstream's usage, once it came
        self.calls: dict[tuple[int, int], int] = {}  # (choice, upstream index) → our dense index
        self.ended: set[int] = set()
        self.seen: set[int] = set()
        self.chars = 0  # generated characters, for an estimate when the upstream reports no usage
        self.pieces = 0  # deltas with content: at least one token each

    def text(self, choice: int, content: str) -> TextDelta:
        """The usual delta, one token of text and nothing else: the short way of ``delta``."""
        self.count(choice, content)
        return TextDelta(choice, content)

    def count(self, choice: int, content: str) -> None:
        """A token of text, metered (its event is made by the caller)."""
        self.seen.add(choice)
        self.chars += len(content)
        self.pieces += 1
        self.ctx.usage.output_tokens += 1

    def delta(self, choice: int, delta: dict[str, Any], logprobs: Any = None) -> list[Event]:
        events: list[Event] = []
        self.seen.add(choice)
        for field in REASONING_FIELDS:
            reasoning = delta.get(field)
            if isinstance(reasoning, str) and reasoning:
                events.append(ReasoningDelta(choice, reasoning))
                self.chars += len(reasoning)
                break
        content = delta.get("content")
        lps = _logprobs(logprobs) if logprobs else None
        if (isinstance(content, str) and content) or lps:
            text = content if isinstance(content, str) else ""
            events.append(TextDelta(choice, text, lps))
            self.chars += len(text)
        for position, call in enumerate(delta.get("tool_calls") or ()):
            upstream_index = call.get("index", position)
            function = call.get("function") or {}
            key = (choice, upstream_index)
            if key not in self.calls:
                self.calls[key] = dense = sum(1 for c, _ in self.calls if c == choice)
                events.append(ToolCallStart(choice, dense, call.get("id") or tool_call_id(), function.get("name", "")))
            arguments = function.get("arguments")
            if isinstance(arguments, dict):
                arguments = orjson.dumps(arguments).decode()
            if arguments:
                events.append(ToolCallDelta(choice, self.calls[key], arguments))
                self.chars += len(arguments)
        if events:
            self.pieces += 1
            self.ctx.usage.output_tokens += 1
        return events

    def chunk(self, chunk: dict[str, Any]) -> list[Event]:
        """Any chunk the read of a stream has no short way for, or a whole answer (its choices
        carry a ``message`` where a chunk's carry a ``delta``)."""
        if "error" in chunk and not chunk.get("choices"):
            raise stream_error(self.deployment, chunk)
        if chunk.get("usage"):
            self.reported = chunk["usage"]
        events: list[Event] = []
        for choice in chunk.get("choices") or ():
            index = int(choice.get("index", 0))
            # A server that answers a stream with whole messages (``message``) is read the same way.
            delta = choice.get("delta") or choice.get("message") or {}
            events.extend(self.delta(index, delta, choice.get("logprobs")))
            if choice.get("finish_reason"):
                events.extend(self.finish(index, choice["finish_reason"]))
        return events

    def end(self) -> list[Event]:
        """The choices the upstream began and did not finish, finished (the first one at least)."""
        events: list[Event] = []
        for choice in sorted(self.seen - self.ended) or ([] if self.ended else [0]):
            events.extend(self.finish(choice, "stop"))
        return events

    def finish(self, choice: int, reason: str | None) -> list[Event]:
        if choice in self.ended:
            return []
        self.ended.add(choice)
        mapped = FINISH.get(reason or "stop", "stop")
        if any(c == choice for c, _ in self.calls) and mapped == "stop":
            mapped = "tool_calls"
        return [ChoiceEnd(choice, mapped)]

    def estimate(self) -> int:
        # Every content delta holds at least one token; ~4 characters a token otherwise.
        return max(self.pieces, (self.chars + 3) // 4)


class TextTemplate:
    """The bytes around the text of an upstream's one-token text chunk, learned from one of them.

    An upstream repeats the same chunk with only the token changed (same id, created, model, field
    order): a chunk that is the learned head, one JSON string, and the learned tail is that chunk
    with that text, read without building its dicts. It is learned only once a probe text put
    between head and tail parses as the learned chunk with the probe as its text (so a text that
    also appears elsewhere in the chunk, or an escaped one, is never mistaken); anything else is
    read the general way. A few relearns a stream at most (an upstream whose chunks all differ,
    ``created`` ticking every second or usage on every chunk, costs one extra parse a few times).
    """

    __slots__ = ("choice", "head", "learns", "size", "tail")

    PROBE = "\x01"

    def __init__(self, learns: int = 4) -> None:
        self.head = b"\x00"  # matches no chunk until learned (a chunk starts with "{")
        self.tail = b""
        self.size = 1
        self.choice = 0
        self.learns = learns

    def read(self, data: bytes) -> str | None:
        """The text of a chunk of the learned shape, None for any other chunk."""
        if len(data) <= self.size or not data.startswith(self.head) or not data.endswith(self.tail):
            return None
        try:
            text = orjson.loads(data[len(self.head) : len(data) - len(self.tail)])
        except orjson.JSONDecodeError:
            return None
        return text if type(text) is str and text else None

    def learn(self, data: bytes, chunk: dict[str, Any], text: str) -> None:
        """``chunk`` (parsed from ``data``) is one choice's one token of ``text`` and nothing else."""
        if self.learns <= 0 or chunk.get("usage") or "error" in chunk:
            return
        self.learns -= 1
        encoded = orjson.dumps(text)
        at = data.find(encoded)
        if at < 0 or data.find(encoded, at + 1) >= 0:
            return  # encoded otherwise by the upstream, or not only the text
        head, tail = data[:at], data[at + len(encoded) :]
        try:
            probed = orjson.loads(head + orjson.dumps(self.PROBE) + tail)
        except orjson.JSONDecodeError:
            return
        delta = chunk["choices"][0]["delta"]
        delta["content"] = self.PROBE
        same = probed == chunk
        delta["content"] = text
        if same:
            self.head, self.tail, self.size = head, tail, len(head) + len(tail)
            self.choice = int(chunk["choices"][0].get("index", 0))


class OpenAICompatBackend(HttpUpstream):
    path = "/chat/completions"
    kind = "openai"
    whole_answers = True
    template_learns = 4  # TextTemplate's relearns a stream (0: every chunk read the general way)

    def __init__(self, deployment: Deployment, entry: ModelEntry, env: BackendEnv | None = None) -> None:
        super().__init__(deployment, entry)
        self.options = OpenAIOptions.model_validate(deployment.options)
        if deployment.api_key:
            self.headers["authorization"] = f"Bearer {deployment.api_key}"

    def encode(self, request: CoreRequest) -> bytes:
        return orjson.dumps(wire_request(request, self.upstream_model, self.options))

    # Embedding models served by the upstream (catalog type "embedding"): see openai_embeddings.
    async def embed(self, request: EmbeddingRequest, ctx: CallContext) -> Embeddings:
        return await openai_embeddings.embed(self, request, ctx)

    async def count_input_tokens(self, request: EmbeddingRequest) -> tuple[list[int], bool]:
        return openai_embeddings.estimate(request)

    async def streamed(self, response: Streaming, ctx: CallContext, request: CoreRequest) -> AsyncIterator[Event]:
        framer = _Reframer(ctx, self.deployment)
        done = False
        # A caller that waits for the whole answer never sees how it was cut: the tokens of one
        # network read are joined into one event (same text, same count), and the per-event cost
        # (the pipeline's layers, the accumulator) is paid once per read instead of per token.
        joined: list[str] | None = None if request.stream else []
        template = TextTemplate(self.template_learns)
        # SSE lines straight from the client in the batches they arrived in (no generator per
        # layer of parsing: this loop runs once per streamed token).
        async for batch in response.line_batches():
            while batch and not done:
                raw = batch.popleft()
                if not raw.startswith(b"data:"):
                    continue
                data = raw[5:].strip()
                if data == b"[DONE]":
                    done = True
                    break
                content = template.read(data)
                if content is not None:  # most chunks: the last one again with another token
                    index = template.choice
                    if joined is not None and index == 0:
                        joined.append(content)
                        framer.count(0, content)
                        continue
                    yield framer.text(index, content)
                    continue
                try:
                    chunk = orjson.loads(data)
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(chunk, dict):
                    continue
                choices = chunk.get("choices")
                if choices and len(choices) == 1 and not chunk.get("usage"):
                    choice = choices[0]
                    delta = choice.get("delta")
                    if (
                        delta
                        and len(delta) == 1
                        and not choice.get("finish_reason")
                        and not choice.get("logprobs")
                        and type(content := delta.get("content")) is str
                        and content
                    ):  # most chunks: one token of text for one choice
                        index = int(choice.get("index", 0))
                        template.learn(data, chunk, content)
                        if joined is not None and index == 0:
                            joined.append(content)
                            framer.count(0, content)
                            continue
                        yield framer.text(index, content)
                        continue
                if joined:
                    yield TextDelta(0, "".join(joined))
                    joined.clear()
                for event in framer.chunk(chunk):
                    yield event
            if joined:
                yield TextDelta(0, "".join(joined))
                joined.clear()
            if done:
                break
        if not done and not framer.ended:
            # The connection closed cleanly but the answer never finished: do not pass it off as whole.
            raise UpstreamError(f"upstream {self.deployment.name} ended its stream before the answer finished")
        for event in framer.end():
            yield event
        yield UsageReport(self._usage(framer, ctx, request))

    async def whole(self, body: bytes, ctx: CallContext, request: CoreRequest) -> AsyncIterator[Event]:
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict) or not ("choices" in answer or "error" in answer):
            raise UpstreamError(
                f"upstream {self.deployment.name} answered 200 with a body that is not a chat completion: "
                f"{body[:200].decode('utf-8', 'replace')!r}"
            )
        framer = _Reframer(ctx, self.deployment)
        for event in framer.chunk(answer):
            yield event
        for event in framer.end():
            yield event
        yield UsageReport(self._usage(framer, ctx, request))

    def _usage(self, framer: _Reframer, ctx: CallContext, request: CoreRequest) -> Usage:
        usage = openai_usage(framer.reported)
        if usage is None:
            # The upstream reported nothing (llama_cpp.server streaming): bill our estimate, marked.
            prompt = ctx.usage.input_tokens or self.estimate(request)
            usage = Usage(input_tokens=prompt, output_tokens=framer.estimate(), estimated=True)
        ctx.usage = usage
        return usage
