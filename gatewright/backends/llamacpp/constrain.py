"""Constrained decoding on the embedded engine: grammars become per-token logit masks.

NOTE(gatewright#4): the grammars are compiled by llguidance, not by llama.cpp's GBNF converter
(``LlamaGrammar.from_json_schema``). llguidance enforces what the GBNF converter silently drops
(``minimum``/``maximum``, ``multipleOf``, string ``format``), answers an *error* for a JSON Schema
keyword it cannot enforce (so a request gets a 400 instead of unconstrained output), handles
``anyOf``/``$ref``, lets one Lark grammar mix free text, special tokens (``<tool_call>``) and
embedded JSON Schemas (``%json``), and computes a mask in well under a millisecond. GBNF through
llama-cpp-python would also bypass the engine's own sampler setup.

JSON is written in one fixed style, ``{"a": 1, "b": [2, 3]}``: the separators Hugging Face chat
templates use when they render earlier tool calls, and no free whitespace, which small models
otherwise fill with endless newlines.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import llguidance
import numpy as np
import orjson

from gatewright.core.errors import InternalError, UnsupportedFeature

if TYPE_CHECKING:
    import numpy.typing as npt

JSON_STYLE: dict[str, Any] = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def styled(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with gatewright's JSON style (``x-guidance`` is read at a schema's top level only)."""
    return {**schema, "x-guidance": JSON_STYLE}


def inline_json(schema: dict[str, Any]) -> str:
    """A JSON Schema as a Lark ``%json`` term."""
    return "%json " + orjson.dumps(styled(schema)).decode()


def lark_string(text: str) -> str:
    """A Lark string literal (JSON escapes are valid Lark escapes)."""
    return orjson.dumps(text).decode()


class GrammarError(ValueError):
    """llguidance refused a grammar; the message says which keyword or construct."""


class Guide:
    """One model's llguidance tokenizer and its compiled grammars.

    The tokenizer is built from the model's vocabulary on first use (seconds: once per model);
    compiled grammars are kept by text, so an agent resending the same tools every turn pays once.
    Thread-safe: grammars compile on the event loop's helper threads, matchers run on the worker.
    """

    def __init__(self, build_tokenizer: Callable[[], llguidance.LLTokenizer], cache_size: int = 64) -> None:
        self._build_tokenizer = build_tokenizer
        self._tokenizer: llguidance.LLTokenizer | None = None
        self._compiled: OrderedDict[str, llguidance.LLMatcher] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    @property
    def tokenizer(self) -> llguidance.LLTokenizer:
        with self._lock:
            if self._tokenizer is None:
                self._tokenizer = self._build_tokenizer()
            return self._tokenizer

    def is_special(self, text: str) -> bool:
        """Whether ``text`` is one special token of this model (a grammar may then name it ``<...>``)."""
        tokenizer = self.tokenizer
        ids = tokenizer.tokenize_str(text, parse_special=True)
        return len(ids) == 1 and tokenizer.is_special_token(ids[0])

    def check(self, lark: str) -> None:
        """Raise ``GrammarError`` if the grammar cannot be enforced; cheaper than ``compile``."""
        with self._lock:
            if lark in self._compiled:
                return
        message = llguidance.LLMatcher.validate_grammar(llguidance.LLMatcher.grammar_from_lark(lark), self.tokenizer)
        if message:
            raise GrammarError(message)

    def compile(self, lark: str) -> llguidance.LLMatcher:
        """A fresh matcher at the start of the grammar (a copy of the cached one)."""
        with self._lock:
            prototype = self._compiled.get(lark)
            if prototype is not None:
                self._compiled.move_to_end(lark)
                return prototype.deep_copy()
        self.check(lark)
        prototype = llguidance.LLMatcher(self.tokenizer, llguidance.LLMatcher.grammar_from_lark(lark), log_level=0)
        if prototype.is_error():
            raise GrammarError(prototype.get_error())
        with self._lock:
            self._compiled[lark] = prototype
            while len(self._compiled) > self._cache_size:
                self._compiled.popitem(last=False)
        return prototype.deep_copy()

    def check_schema(self, schema: dict[str, Any], param: str) -> None:
        """400 naming the parameter and the feature when a JSON Schema cannot be enforced."""
        try:
            self.check("start: " + inline_json(schema))
        except GrammarError as error:
            raise unsupported_schema(str(error), param) from None


# llguidance frames its errors with a position in, and an excerpt of, the grammar it built from the
# schema: both mean nothing to a caller, so the message keeps only what went wrong.
_GRAMMAR_POSITION = re.compile(r"^at \d+\(\d+\): (failed to compile JSON schema: )?")
_GRAMMAR_EXCERPT = re.compile(r"^\s*\d+ \| ")


def unsupported_schema(reason: str, param: str) -> UnsupportedFeature:
    lines = reason.splitlines()
    cut = next((i for i, line in enumerate(lines) if _GRAMMAR_EXCERPT.match(line)), len(lines))
    said = _GRAMMAR_POSITION.sub("", " ".join(" ".join(lines[:cut]).split()))[:300] or "unknown reason"
    return UnsupportedFeature(
        f"Invalid '{param}': the embedded engine cannot enforce this JSON Schema ({said}). "
        "Remove or rewrite that part of the schema.",
        param=param,
        code="unsupported_schema",
    )


class GrammarConstraint:
    """A ``Constraint`` for the engine: masks every token the grammar does not allow next."""

    __slots__ = ("_allowed", "_bits", "_blocked", "matcher")

    def __init__(self, matcher: llguidance.LLMatcher, n_vocab: int) -> None:
        self.matcher = matcher
        self._bits = np.zeros((n_vocab + 31) // 32, dtype=np.int32)
        self._allowed = np.empty(n_vocab, dtype=np.bool_)
        self._blocked = np.empty(n_vocab, dtype=np.bool_)

    def mask(self, input_ids: Any, logits: npt.NDArray[np.single]) -> npt.NDArray[np.single]:
        bits = self._bits
        self.matcher.unsafe_compute_mask_ptr(bits.ctypes.data, bits.nbytes)
        size = logits.shape[0]
        allowed = self._allowed[:size]
        allowed[:] = np.unpackbits(bits.view(np.uint8), count=size, bitorder="little").view(np.bool_)
        blocked = np.logical_not(allowed, out=self._blocked[:size])
        np.copyto(logits, -np.inf, where=blocked)
        return logits

    def consume(self, token: int) -> None:
        if not self.matcher.consume_token(token):
            # The mask forbids this, so only a grammar that hit a resource limit gets here.
            raise InternalError(f"constrained decoding failed: {self.matcher.get_error()[:300]}")

    def done(self) -> bool:
        return bool(self.matcher.is_stopped())
