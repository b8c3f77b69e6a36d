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

from gatewright.core.catalog import Prices
from gatewright.core.types import Cost, Usage

CREDITS_PER_USD = 2_000_000
_MICRO = 1_000_000  # millionths of a credit


@lru_cache(maxsize=1024)
def _rates(input_price: float, cached_price: float, output_price: float) -> tuple[int, int, int]:
    """Millionths of a credit per token, from USD per million tokens."""

    def rate(usd_per_million: float) -> int:
        exact = Decimal(str(usd_per_million)) * CREDITS_PER_USD  # millionths of a credit per token
        return int(exact.to_integral_value(rounding="ROUND_CEILING"))

    return rate(input_price), rate(cached_price), rate(output_price)


def price(usage: Usage, prices: Prices) -> Cost:
    """The cost of ``usage``; cached prompt tokens bill at the cached-input price."""
    per_input, per_cached, per_output = _rates(prices.input, prices.cached, prices.output)
    uncached = max(usage.input_tokens - usage.cached_tokens, 0)
    micro = uncached * per_input + usage.cached_tokens * per_cached + usage.output_tokens * per_output
    credits = -(-micro // _MICRO)  # ceiling division
    return Cost(credits=credits, usd=credits / CREDITS_PER_USD)


def worst_case(prompt_tokens: int, max_output_tokens: int, prices: Prices) -> int:
    """Credits to hold before generating: every prompt token uncached, every output token used."""
    return price(Usage(input_tokens=prompt_tokens, output_tokens=max_output_tokens), prices).credits


def credits_to_usd(credits: int | Decimal) -> float:
    return float(Decimal(credits) / CREDITS_PER_USD)


def usd_to_credits(usd: float) -> int:
    return int(Decimal(str(usd)) * CREDITS_PER_USD)
