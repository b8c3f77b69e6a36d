"""How a local model writes tool calls, as data, and the grammar that makes it write them validly.

A call is always the JSON object ``{"name": "<tool>", "arguments": {...}}`` with the arguments
constrained by the tool's ``parameters`` schema. Around it the grammar accepts the forms the model
family's template teaches (``<tool_call>\\n{...}\\n</tool_call>`` for Qwen/Hermes templates) and the
ones small models fall back to instead (research in local-inference.md §3: a bare ``{...}`` or a
```` ```json ```` fence); whichever the model starts, the grammar finishes validly, and
``shaping.ToolCallShaper`` reads all of them.

With ``tool_choice`` ``auto`` the grammar has two branches and the model's first token picks one:
an answer (free text that does not start like a call, or the ``response_format`` JSON) or calls.
``required`` and named choices have the calls branch only. ``parallel_tool_calls`` lets calls
repeat: tagged ones one per line, fenced ones inside one fence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gatewright.backends.llamacpp.constrain import inline_json, lark_string
from gatewright.core.errors import UnsupportedFeature
from gatewright.core.types import CoreRequest, ToolSpec


@dataclass(frozen=True, slots=True)
class CallSyntax:
    """One template family's call markup and the fallbacks its small models use."""

    open_tag: str
    close_tag: str
    fence: str | None = "```json"  # a Markdown fence around the call object
    bare: bool = True  # the call object alone


# Catalog deployments pick one with ``options.tool_syntax``; Qwen2.5/Qwen3 and Hermes share this one.
CALL_SYNTAXES: dict[str, CallSyntax] = {
    "hermes": CallSyntax("<tool_call>", "</tool_call>"),
}
DEFAULT_SYNTAX = "hermes"


@dataclass(frozen=True, slots=True)
class CallGrammar:
    """A Lark grammar for one request, and what the shaper must know to read its output."""

    lark: str
    openers: tuple[str, ...]  # text that starts a call; anything else is the answer
    answer_allowed: bool


def parameters_param(index: int) -> str:
    return f"tools[{index}].function.parameters"


def arguments_schema(tool: ToolSpec, index: int) -> dict[str, Any]:
    """The tool's parameters as an object schema: arguments are always a JSON object."""
    schema = tool.parameters
    kind = schema.get("type", "object")
    if kind != "object":
        raise UnsupportedFeature(
            f"Invalid '{parameters_param(index)}': tool parameters must be a JSON Schema of type "
            f"'object', got {kind!r}.",
            param=parameters_param(index),
            code="invalid_function_parameters",
        )
    return schema if "type" in schema else {**schema, "type": "object"}


def _escape(text: str) -> str:
    # Rust regex syntax inside a Lark /.../ literal.
    out = []
    for char in text:
        if char == "\n":
            out.append("\\n")
        elif char in "\\.+*?()|[]{}^$#&-~/":
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


def text_not_starting_with(openers: tuple[str, ...]) -> str:
    """A regex for non-empty text that starts with neither whitespace nor any opener.

    Built from the openers' trie: at each prefix, the text may stop there, or go on with a
    character that leaves the trie and then anything at all.
    """
    trie: dict[str, Any] = {}
    for opener in openers:
        node = trie
        for char in opener:
            node = node.setdefault(char, {})
        node[""] = {}  # an opener ends here

    def alternatives(node: dict[str, Any], prefix: str) -> list[str]:
        branches = sorted(c for c in node if c)
        excluded = "".join(_escape(c) for c in branches) + ("" if prefix else "\\s")
        out = [f"{_escape(prefix)}[^{excluded}](.|\\n)*"]
        if prefix:
            out.append(_escape(prefix))
        for char in branches:
            if "" not in node[char]:
                out.extend(alternatives(node[char], prefix + char))
        return out

    return "|".join(alternatives(trie, ""))


def _body(tool: ToolSpec, index: int) -> str:
    head = lark_string(f'{{"name": "{tool.name}", "arguments": ')
    return f"{head} {inline_json(arguments_schema(tool, index))} {lark_string('}')}"


def call_grammar(
    request: CoreRequest, syntax: CallSyntax, tag_is_token: bool, answer_schema: dict[str, Any] | None
) -> CallGrammar:
    """The grammar for a request with tools; ``answer_schema`` is the response_format's, if JSON."""
    choice = request.tool_choice
    tools = [(i, t) for i, t in enumerate(request.tools) if choice.mode != "named" or t.name == choice.name]
    # A tag that is one special token is named as such (``<tool_call>``), else written as text.
    opening = syntax.open_tag if tag_is_token else lark_string(syntax.open_tag)
    closing = syntax.close_tag if tag_is_token else lark_string(syntax.close_tag)
    more = request.parallel_tool_calls
    # Several calls only where the markup around them says when the list ends: tagged calls one per
    # line (the model writes EOS or the next tag), calls in one fence until it closes. After a bare
    # call the model would often want a newline for some chatter, and a grammar that took that
    # newline as "another call follows" would force it to repeat the call.
    forms = ["tagged" + (' ("\\n" tagged)*' if more else "")]
    rules = [f'tagged: {opening} "\\n" body "\\n" {closing}']
    openers = [syntax.open_tag]
    if syntax.fence is not None:
        forms.append("fenced")
        bodies = 'body ("\\n" body)*' if more else "body"
        rules.append(f"fenced: {lark_string(syntax.fence + chr(10))} {bodies} {lark_string(chr(10) + '```')}")
        openers.append(syntax.fence)
    # A JSON answer starts with "{" too, so a bare call is only told apart from a text answer.
    if syntax.bare and answer_schema is None:
        forms.append("body")
        openers.append("{")
    answer_allowed = choice.mode == "auto"
    lines = [
        "%llguidance {}",
        "start: answer | calls" if answer_allowed else "start: calls",
        "calls: " + " | ".join(forms),
        *rules,
        "body: " + " | ".join(f"body_{i}" for i, _ in tools),
        *(f"body_{i}: {_body(tool, i)}" for i, tool in tools),
    ]
    if answer_allowed:
        if answer_schema is not None:
            lines.append("answer: " + inline_json(answer_schema))
        else:
            lines += ["answer: TEXT?", f"TEXT: /{text_not_starting_with(tuple(openers))}/"]
    return CallGrammar("\n".join(lines) + "\n", tuple(openers), answer_allowed)
