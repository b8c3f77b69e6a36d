"""Render neutral messages into a model's prompt with the model's own chat template.

The template comes from the GGUF (``tokenizer.chat_template``), or from the catalog entry's
``options.chat_template`` for files that carry none. Rendering follows Hugging Face conventions
(tool-call arguments as objects, ``tools`` in OpenAI's function shape) so stock templates work.
"""

from __future__ import annotations

from typing import Any

import orjson
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from gatewright.core.types import (
    CoreRequest,
    Message,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolResultPart,
)

# Used only for GGUF files without a template of their own (base models): plain ChatML.
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _arguments(text: str) -> Any:
    try:
        return orjson.loads(text) if text else {}
    except orjson.JSONDecodeError:
        return text


def message_dict(message: Message) -> dict[str, Any]:
    text = "".join(p.text for p in message.parts if isinstance(p, TextPart))
    if message.role == "tool":
        result = next(p for p in message.parts if isinstance(p, ToolResultPart))
        return {"role": "tool", "content": result.content, "tool_call_id": result.call_id}
    out: dict[str, Any] = {"role": message.role, "content": text}
    if message.role == "assistant":
        calls = [p for p in message.parts if isinstance(p, ToolCallPart)]
        if calls:
            out["content"] = text or None
            out["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": _arguments(c.arguments)}}
                for c in calls
            ]
        thinking = "".join(p.text for p in message.parts if isinstance(p, ThinkingPart))
        if thinking:
            out["reasoning_content"] = thinking
    if message.name:
        out["name"] = message.name
    return out


def _split_tool_results(messages: tuple[Message, ...]) -> list[Message]:
    """One template message per tool result (a neutral tool message may carry several)."""
    out: list[Message] = []
    for message in messages:
        results = [p for p in message.parts if isinstance(p, ToolResultPart)]
        if message.role == "tool" and len(results) > 1:
            out.extend(Message("tool", (r,)) for r in results)
        else:
            out.append(message)
    return out


class ChatTemplate:
    def __init__(self, template: str, bos_token: str, eos_token: str, extra: dict[str, Any] | None = None) -> None:
        self._formatter = Jinja2ChatFormatter(template=template, eos_token=eos_token, bos_token=bos_token)
        self._extra = extra or {}

    def render(self, request: CoreRequest) -> str:
        messages = [message_dict(m) for m in _split_tool_results(request.messages)]
        kwargs: dict[str, Any] = dict(self._extra)
        if request.tools and request.tool_choice.mode != "none":
            kwargs["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description or "", "parameters": t.parameters},
                }
                for t in request.tools
            ]
        if request.reasoning is not None:
            # Templates with a thinking switch (Qwen3, GLM) read this; others ignore it.
            kwargs["enable_thinking"] = request.reasoning.effort != "none"
        result = self._formatter(messages=messages, **kwargs)  # type: ignore[arg-type]
        return result.prompt
