"""The ``x-ratelimit-*`` headers every OpenAI-style answer carries, resets written as OpenAI writes
them: Go-duration text that ``time.ParseDuration`` (and its ports in clients) reads back."""

from __future__ import annotations

import re

import pytest

from gatewright.api.http import limit_headers, reset_text
from gatewright.core.limits import Bucket, state_of

# Go's duration grammar, as far as these headers use it: decimal numbers, each with a unit.
GO_DURATION = re.compile(r"^(?:0s|(?:\d+(?:\.\d+)?(?:h|m|s|ms))+)$")
UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parsed(text: str) -> float:
    """Seconds, as ``time.ParseDuration`` reads the text (for the units written here)."""
    return sum(float(number) * UNITS[unit] for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text))


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0s"),
        (-0.5, "0s"),
        (6e-05, "1ms"),
        (0.0204, "20ms"),
        (0.9996, "1000ms"),
        (1.0, "1s"),
        (8.6432, "8.64s"),
        (59.4, "59.4s"),
        (60.0, "1m0s"),
        (360.9, "6m0s"),
    ],
)
def test_a_reset_is_go_duration_text(seconds: float, text: str) -> None:
    assert reset_text(seconds) == text
    assert GO_DURATION.match(text)


@pytest.mark.parametrize("seconds", [1e-9, 3.3e-5, 0.001, 0.123456, 0.5, 1.23456, 9.999, 42.42, 59.99, 61.5, 3599.0])
def test_a_reset_reads_back_close_to_what_it_says(seconds: float) -> None:
    text = reset_text(seconds)
    assert GO_DURATION.match(text), text
    assert abs(parsed(text) - seconds) <= max(0.001, seconds * 0.01) + (1.0 if seconds >= 60 else 0.0)


def test_a_nearly_full_bucket_resets_in_a_parsable_duration() -> None:
    # A key far below its limit: its buckets refill in microseconds (this read "6e-05s" before).
    requests = Bucket(capacity=1_000_000_000, level=999_999_000.3, stamp=0.0)
    tokens = Bucket(capacity=1_000_000_000_000, level=999_999_990_000.7, stamp=0.0)
    headers = limit_headers(state_of(requests, tokens))
    assert headers["x-ratelimit-remaining-requests"] == "999999000"
    for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"):
        assert GO_DURATION.match(headers[name]), headers[name]
