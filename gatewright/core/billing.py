"""Prices and credits: pure functions of usage and a model's prices.

1 USD = 2,000,000 credits (the reference platform's own ratio: 120000 credits ↔ 0.06 USD). Balances
are whole credits; a request's cost is rounded up to the next whole credit, so a request that used
any tokens always costs at least one credit and the sum of requests never undercounts.
"""

from __future__ import annotations

import math
from decimal import Decimal

from gatewright.core.catalog import Prices
from gatewright.core.types import Cost, Usage

CREDITS_PER_USD = 2_000_000
_PER_MILLION = Decimal(1_000_000)


def _credits(tokens: int, usd_per_million: float) -> Decimal:
    return Decimal(tokens) * Decimal(str(usd_per_million)) * CREDITS_PER_USD / _PER_MILLION


def price(usage: Usage, prices: Prices) -> Cost:
    """The cost of ``usage``; cached prompt tokens bill at the cached-input price."""
    uncached = max(usage.input_tokens - usage.cached_tokens, 0)
    exact = (
        _credits(uncached, prices.input)
        + _credits(usage.cached_tokens, prices.cached)
        + _credits(usage.output_tokens, prices.output)
    )
    credits = math.ceil(exact)
    return Cost(credits=credits, usd=credits_to_usd(credits))


def worst_case(prompt_tokens: int, max_output_tokens: int, prices: Prices) -> int:
    """Credits to hold before generating: every prompt token uncached, every output token used."""
    return price(Usage(input_tokens=prompt_tokens, output_tokens=max_output_tokens), prices).credits


def credits_to_usd(credits: int | Decimal) -> float:
    return float(Decimal(credits) / CREDITS_PER_USD)


def usd_to_credits(usd: float) -> int:
    return math.floor(Decimal(str(usd)) * CREDITS_PER_USD)
