"""The grammars constrained decoding uses, checked against the embedded model's real tokenizer
without generating: which outputs each tool_choice / response_format lets through."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from gatewright.backends.llamacpp.constrain import GrammarConstraint, Guide
from gatewright.backends.llamacpp.toolcalls import CALL_SYNTAXES, call_grammar, text_not_starting_with
from gatewright.core.errors import UnsupportedFeature
from gatewright.core.types import CoreRequest, Message, TextPart, ToolChoice, ToolSpec
from tests.engine.conftest import ADD_PARAMETERS, WEATHER_PARAMETERS

HERMES = CALL_SYNTAXES["hermes"]
TOOLS = (ToolSpec("get_weather", None, WEATHER_PARAMETERS), ToolSpec("add", None, ADD_PARAMETERS))
PARIS = '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}'
SUM = '{"name": "add", "arguments": {"a": 2, "b": 3}}'


def request(mode: str, name: str | None = None, parallel: bool = True, tools: tuple[ToolSpec, ...] = TOOLS) -> Any:
    return CoreRequest(
        model="m",
        messages=(Message("user", (TextPart("hi"),)),),
        tools=tools,
        tool_choice=ToolChoice(mode, name),  # type: ignore[arg-type]
        parallel_tool_calls=parallel,
    )


def accepts(guide: Guide, lark: str, text: str, special: bool = True) -> bool:
    """Whether the grammar lets the model write exactly ``text`` and stop there."""
    matcher = guide.compile(lark)
    tokens = guide.tokenizer.tokenize_str(text, parse_special=special)
    return bool(matcher.consume_tokens(tokens) and matcher.is_accepting())


def tools_lark(guide: Guide, req: Any, answer: dict[str, Any] | None = None) -> str:
    return call_grammar(req, HERMES, guide.is_special(HERMES.open_tag), answer).lark


def test_the_call_tag_is_one_special_token(guide: Guide) -> None:
    assert guide.is_special("<tool_call>") and guide.is_special("</tool_call>")
    assert not guide.is_special("hello")


@pytest.mark.parametrize(
    "text",
    [
        f"<tool_call>\n{PARIS}\n</tool_call>",
        f"```json\n{SUM}\n```",
        PARIS,
        f"```json\n{PARIS}\n{SUM}\n```",
        f"<tool_call>\n{PARIS}\n</tool_call>\n<tool_call>\n{SUM}\n</tool_call>",
    ],
)
def test_required_accepts_every_call_form(guide: Guide, text: str) -> None:
    assert accepts(guide, tools_lark(guide, request("required")), text)


@pytest.mark.parametrize(
    "text",
    [
        "Hello!",
        '{"name": "get_time", "arguments": {}}',  # not a tool
        '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "kelvin"}}',  # enum
        '{"name": "get_weather", "arguments": {"city": "Paris"}}',  # required field
        '{"name": "add", "arguments": {"a": 2000, "b": 3}}',  # maximum
        '{"name":"add","arguments":{"a":2,"b":3}}',  # the style is fixed
        '{"name": "get_weather", "arguments": {"city": "' + "x" * 25 + '", "unit": "celsius"}}',  # maxLength
        f"{PARIS}\n{SUM}",  # a bare call is the last one: a newline after it is no "more calls follow"
        f"{SUM}\n",
    ],
)
def test_required_rejects_anything_but_valid_calls(guide: Guide, text: str) -> None:
    assert not accepts(guide, tools_lark(guide, request("required")), text)


@pytest.mark.parametrize("mode", ["required", "auto"])
def test_the_tag_spelled_out_in_plain_tokens_is_no_call(guide: Guide, mode: str) -> None:
    # The tokenizer always turns the text "<tool_call>" into the special token; a model can still
    # sample "<", "tool", ... one by one, which must not pass for the tag (nor hide a call in text).
    tokenizer = guide.tokenizer
    spelled = [t for piece in ("<", "tool", "_call", ">") for t in tokenizer.tokenize_str(piece)]
    matcher = guide.compile(tools_lark(guide, request(mode)))
    assert matcher.try_consume_tokens(spelled) < len(spelled)


def test_named_choice_allows_only_that_function(guide: Guide) -> None:
    lark = tools_lark(guide, request("named", "add"))
    assert accepts(guide, lark, SUM)
    assert not accepts(guide, lark, PARIS)


def test_without_parallel_calls_one_call_ends_the_output(guide: Guide) -> None:
    lark = tools_lark(guide, request("required", parallel=False))
    assert accepts(guide, lark, PARIS) and accepts(guide, lark, f"```json\n{SUM}\n```")
    assert not accepts(guide, lark, f"```json\n{PARIS}\n{SUM}\n```")
    assert not accepts(guide, lark, f"<tool_call>\n{PARIS}\n</tool_call>\n<tool_call>\n{SUM}\n</tool_call>")
    matcher = guide.compile(lark)
    matcher.consume_tokens(guide.tokenizer.tokenize_str(PARIS))
    assert matcher.is_stopped()  # the engine ends the choice here, without waiting for EOS


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("Hello there.", True),
        ("```python\nprint(1)\n```", True),  # a code fence is text unless it is a json fence
        ("`", True),
        ("", True),
        ("<b>bold</b>", True),
        (PARIS, True),
        (f"```json\n{SUM}\n```", True),
        ("{not json", False),  # text may not start like a call
        ("```json\nplain", False),
        (" {", False),  # nor hide one behind whitespace
        ("\nHello", False),
    ],
)
def test_auto_lets_the_model_choose_text_or_calls(guide: Guide, text: str, ok: bool) -> None:
    assert accepts(guide, tools_lark(guide, request("auto")), text) is ok


def test_auto_with_a_json_answer_tells_answer_and_calls_apart(guide: Guide) -> None:
    answer = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}
    grammar = call_grammar(request("auto"), HERMES, True, answer)
    assert "{" not in grammar.openers  # a bare call would look like the answer
    assert accepts(guide, grammar.lark, '{"x": 1}')
    assert accepts(guide, grammar.lark, f"<tool_call>\n{SUM}\n</tool_call>")
    assert not accepts(guide, grammar.lark, SUM)
    assert not accepts(guide, grammar.lark, "Hello")


@pytest.mark.parametrize("openers", [("{", "```json", "<tool_call>"), ("/*", "-x", "a.b", "[["), ("\\", "|")])
def test_text_regex_excludes_exactly_the_openers(guide: Guide, openers: tuple[str, ...]) -> None:
    lark = f"start: TEXT\nTEXT: /{text_not_starting_with(openers)}/\n"
    for opener in openers:
        assert not accepts(guide, lark, opener + " rest", special=False)
        assert accepts(guide, lark, opener[:-1] + "#", special=False) or len(opener) == 1
    assert accepts(guide, lark, "plain words", special=False)


def test_tool_parameters_must_describe_an_object(guide: Guide) -> None:
    tools = (*TOOLS, ToolSpec("echo", None, {"type": "string"}))
    with pytest.raises(UnsupportedFeature) as raised:
        tools_lark(guide, request("auto", tools=tools))
    assert raised.value.param == "tools[2].function.parameters"


def test_parameters_without_a_type_still_give_objects(guide: Guide) -> None:
    loose = ToolSpec("f", None, {"properties": {"n": {"type": "integer"}}, "required": ["n"]})
    lark = tools_lark(guide, request("required", tools=(loose,)))
    assert accepts(guide, lark, '{"name": "f", "arguments": {"n": 1}}')
    assert not accepts(guide, lark, '{"name": "f", "arguments": 1}')


@pytest.mark.parametrize(
    ("schema", "feature"),
    [
        ({"type": "object", "not": {"required": ["a"]}}, "not"),
        ({"type": "array", "uniqueItems": True}, "uniqueItems"),
        ({"type": "object", "if": {"type": "object"}, "then": {}}, "if"),
        ({"type": "string", "pattern": "(?=a)b"}, "look-around"),
        ({"type": "string", "format": "no-such-format"}, "no-such-format"),
        ({"type": "object", "properties": {"a": {"$ref": "https://example.com/s.json"}}}, "https://example.com/s.json"),
        ({"type": "object", "properties": {"a": {"type": "string"}}, "minProperties": 1}, "min/maxProperties"),
        ({"type": "object", "dependentRequired": {"a": ["b"]}}, "dependentRequired"),
        ({"type": "array", "contains": {"type": "integer"}}, "contains"),
    ],
)
def test_unenforceable_schemas_are_refused_by_name(guide: Guide, schema: dict[str, Any], feature: str) -> None:
    with pytest.raises(UnsupportedFeature) as raised:
        guide.check_schema(schema, "response_format.json_schema.schema")
    assert raised.value.param == "response_format.json_schema.schema"
    message = raised.value.message
    assert feature in message and raised.value.status == 400
    assert "%json" not in message and "x-guidance" not in message  # nothing of the grammar we built


def test_constraint_masks_logits_and_ends_with_the_grammar(guide: Guide, vocab_model: Any) -> None:
    n_vocab = vocab_model.n_vocab()
    constraint = GrammarConstraint(guide.compile('start: "yes" | "no"'), n_vocab)
    logits = np.zeros(n_vocab, dtype=np.single)
    masked = constraint.mask(None, logits)
    allowed = {int(i) for i in np.flatnonzero(np.isfinite(masked))}
    yes, maybe = (guide.tokenizer.tokenize_str(word) for word in ("yes", "maybe"))
    assert len(yes) == 1 and yes[0] in allowed and maybe[0] not in allowed
    assert all(b"yes".startswith(p) or b"no".startswith(p) for p in map(_piece(guide), allowed))
    assert not constraint.done()
    constraint.consume(yes[0])
    assert constraint.done()


def _piece(guide: Guide) -> Any:
    return lambda token: guide.tokenizer.decode_bytes([token])
