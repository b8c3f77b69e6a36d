from __future__ import annotations

import pytest

from gatewright.core.billing import CREDITS_PER_USD, credits_to_usd, price, usd_to_credits, worst_case
from gatewright.core.catalog import Prices
from gatewright.core.types import Usage


def test_reference_ratio() -> None:
    # 003 L31451-31460: 120000 credits ↔ 0.06 USD; 000 L168-169: 19237 ↔ 0.0096185.
    assert credits_to_usd(120_000) == pytest.approx(0.06)
    assert credits_to_usd(19_237) == pytest.approx(0.0096185)
    assert usd_to_credits(0.06) == 120_000 and CREDITS_PER_USD == 2_000_000


def test_cached_tokens_bill_at_cached_price_and_reasoning_as_output() -> None:
    prices = Prices(input=1.0, cached_input=0.25, output=4.0)
    full = price(Usage(input_tokens=1000, output_tokens=500, reasoning_tokens=300), prices)
    cached = price(Usage(input_tokens=1000, cached_tokens=800, output_tokens=500, reasoning_tokens=300), prices)
    # 1000 in × 1 + 500 out × 4 = 3000 µUSD·tokens → ×2 credits
    assert full.credits == 2 * (1000 * 1 + 500 * 4)
    assert cached.credits == 2 * (200 * 1 + 800 * 0.25 + 500 * 4)
    assert cached.credits < full.credits
    assert full.usd == pytest.approx(full.credits / CREDITS_PER_USD)


def test_rounds_up_to_whole_credits() -> None:
    prices = Prices(input=0.02, output=0.06)
    assert price(Usage(input_tokens=1), prices).credits == 1  # 0.04 credits → 1
    assert price(Usage(), prices).credits == 0


def test_cached_price_defaults_to_input_price() -> None:
    assert Prices(input=3.0).cached == 3.0


def test_worst_case_covers_any_outcome() -> None:
    prices = Prices(input=1.0, cached_input=0.1, output=2.0)
    hold = worst_case(100, 50, prices)
    for used in range(0, 51, 10):
        assert price(Usage(input_tokens=100, cached_tokens=30, output_tokens=used), prices).credits <= hold


def test_cache_writes_bill_at_the_cache_write_price() -> None:
    prices = Prices(input=3.0, cached_input=0.3, cache_write_input=3.75, output=15.0)
    # 20 plain + 50 read + 30 written = the whole 100-token prompt (core counts the whole prompt).
    usage = Usage(input_tokens=100, cached_tokens=50, cache_write_tokens=30, output_tokens=40)
    assert price(usage, prices).credits == 2 * (20 * 3.0 + 50 * 0.3 + 30 * 3.75 + 40 * 15.0)
    assert Prices(input=3.0).cache_write == 3.0  # defaults to the input price
    # Counts that do not add up (an upstream reporting more cached than prompt) never bill negative.
    odd = Usage(input_tokens=10, cached_tokens=8, cache_write_tokens=8)
    assert price(odd, prices).credits == -(-(8 * 0.3 + 2 * 3.75) * 2 // 1)


def test_worst_case_covers_a_prompt_written_to_the_cache() -> None:
    prices = Prices(input=3.0, cache_write_input=3.75, output=15.0)
    hold = worst_case(100, 50, prices)
    assert price(Usage(input_tokens=100, cache_write_tokens=100, output_tokens=50), prices).credits <= hold
