"""Prices and credits: pure functions of usage and a model's prices.

1 USD = 2,000,000 credits (the reference platform's own ratio: 120000 credits ↔ 0.06 USD). Balances
are whole credits; a request's cost is rounded up to the next whole credit, so a request that used
any tokens always costs at least one credit and the sum of requests never undercounts.

Arithmetic is in integers: a price of P USD per million tokens is 2·P credits per token, kept as
millionths of a credit (exact for prices with up to six decimals, which covers any real price list).
"""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache

import orjson

from gatewright.core.catalog import Prices
from gatewright.core.types import (
    CoreRequest,
    Cost,
    EmbeddingInput,
    ImagePart,
    RedactedThinkingPart,
    ToolCallPart,
    ToolResultPart,
    Usage,
)

CREDITS_PER_USD = 2_000_000
_MICRO = 1_000_000  # millionths of a credit


@lru_cache(maxsize=1024)
def _rates(
    input_price: float, cached_price: float, write_price: float, output_price: float
) -> tuple[int, int, int, int]:
    """Millionths of a credit per token, from USD per million tokens."""

    def rate(usd_per_million: float) -> int:
        exact = Decimal(str(usd_per_million)) * CREDITS_PER_USD  # millionths of a credit per token
        return int(exact.to_integral_value(rounding="ROUND_CEILING"))

    return rate(input_price), rate(cached_price), rate(write_price), rate(output_price)


def price(usage: Usage, prices: Prices) -> Cost:
    """The cost of ``usage``: prompt tokens read from a cache bill at the cached-input price, those
    written to one at the cache-write price, the rest of the prompt at the input price."""
    per_input, per_cached, per_write, per_output = _rates(
        prices.input, prices.cached, prices.cache_write, prices.output
    )
    cached = min(usage.cached_tokens, usage.input_tokens)
    written = min(usage.cache_write_tokens, usage.input_tokens - cached)
    plain = usage.input_tokens - cached - written
    micro = plain * per_input + cached * per_cached + written * per_write + usage.output_tokens * per_output
    credits = -(-micro // _MICRO)  # ceiling division
    return Cost(credits=credits, usd=credits / CREDITS_PER_USD)


def worst_case(prompt_tokens: int, max_output_tokens: int, prices: Prices) -> int:
    """Credits to hold before generating: every prompt token at the dearer of the input and
    cache-write prices, every output token used."""
    usage = Usage(input_tokens=prompt_tokens, output_tokens=max_output_tokens)
    if prices.cache_write > prices.input:  # the whole prompt might be written to the cache
        usage.cache_write_tokens = prompt_tokens
    return price(usage, prices).credits


# A tokenizer's framing of the prompt that its text's bytes do not cover: role markers and
# separators per message, a tool's rendering around its JSON, the reply's opening.
MESSAGE_FRAMING = 16
TOOL_FRAMING = 64
PROMPT_FRAMING = 64
# An image is priced by its pixels, not its bytes: the most any provider we know charges for one
# (high-detail tiling); an image beyond it is still covered by the settlement's cap at the hold.
IMAGE_TOKENS = 4_096


def prompt_token_bound(request: CoreRequest) -> int:
    """Prompt tokens no byte-level tokenizer can exceed: every token of byte-level BPE (and of
    SentencePiece with byte fallback) covers at least one byte of UTF-8, so the text's byte count
    bounds it, plus the framing each message and tool adds. Reserving this (where the model's own
    tokenizer is not at hand) makes the hold cover what an upstream reports for CJK text, code or
    long numbers, which a characters-based estimate undercounts several times over."""
    size = PROMPT_FRAMING
    for message in request.messages:
        size += MESSAGE_FRAMING + len((message.name or "").encode())
        for part in message.parts:
            if isinstance(part, ImagePart):
                size += IMAGE_TOKENS
            elif isinstance(part, ToolCallPart):
                size += len(part.id.encode()) + len(part.name.encode()) + len(part.arguments.encode()) + MESSAGE_FRAMING
            elif isinstance(part, ToolResultPart):
                size += len(part.call_id.encode()) + len(part.content.encode()) + MESSAGE_FRAMING
            elif isinstance(part, RedactedThinkingPart):
                size += len(part.data.encode())  # opaque to us; the provider reads it as input
            else:
                size += len(part.text.encode())
    for tool in request.tools:
        size += TOOL_FRAMING + len(tool.name.encode()) + len((tool.description or "").encode())
        size += len(orjson.dumps(tool.parameters))
    schema = request.response_format.schema
    if schema is not None:
        size += PROMPT_FRAMING + len(orjson.dumps(schema))
    return size


def embedding_token_bound(inputs: tuple[EmbeddingInput, ...], truncate: int | None) -> int:
    """Input tokens an embedding upstream cannot exceed: a text's UTF-8 bytes plus its special
    tokens (WordPiece and byte-level BPE tokens each cover at least a byte), a token array's
    length, each at most ``truncate`` when the request cuts inputs there."""
    total = 0
    for item in inputs:
        bound = len(item.encode()) + MESSAGE_FRAMING if isinstance(item, str) else len(item)
        total += bound if truncate is None else min(bound, truncate)
    return total


def credits_to_usd(credits: int | Decimal) -> float:
    return float(Decimal(credits) / CREDITS_PER_USD)


def usd_to_credits(usd: float) -> int:
    return int(Decimal(str(usd)) * CREDITS_PER_USD)
