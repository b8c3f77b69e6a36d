"""Upstream usage objects → ``core.Usage``, one table per wire format.

``None`` (not reported) is kept apart from ``0`` until the end: an upstream that reports nothing
leaves the gateway's estimate in place, marked ``estimated``.
"""

from __future__ import annotations

from typing import Any

from gatewright.core.types import Usage

# core field → path in the upstream's usage object
OPENAI_USAGE: dict[str, tuple[str, ...]] = {
    "input_tokens": ("prompt_tokens",),
    "output_tokens": ("completion_tokens",),
    "cached_tokens": ("prompt_tokens_details", "cached_tokens"),
    "reasoning_tokens": ("completion_tokens_details", "reasoning_tokens"),
    # Cache writes, where an OpenAI-compatible server in front of a caching provider reports them
    # (OpenRouter's spelling, 003 L9457).
    "cache_write_tokens": ("prompt_tokens_details", "cache_write_tokens"),
}

# Other spellings of the same counts, read when the main path is absent: DeepSeek's cache hits,
# and Anthropic's names as LiteLLM-style proxies pass them through. The prompt stays whole.
OPENAI_USAGE_ALIASES: dict[str, tuple[tuple[str, ...], ...]] = {
    "cached_tokens": (("prompt_cache_hit_tokens",), ("cache_read_input_tokens",)),
    "cache_write_tokens": (("cache_creation_input_tokens",),),
}

# Anthropic's input_tokens excludes cache reads and writes; core's input_tokens is the whole prompt.
ANTHROPIC_USAGE: dict[str, tuple[str, ...]] = {
    "uncached_input": ("input_tokens",),
    "output_tokens": ("output_tokens",),
    "cached_tokens": ("cache_read_input_tokens",),
    "cache_write_tokens": ("cache_creation_input_tokens",),
    "reasoning_tokens": ("output_tokens_details", "thinking_tokens"),
}


def _dig(data: Any, path: tuple[str, ...]) -> int | None:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return int(data) if isinstance(data, (int, float)) else None


def read_usage(data: dict[str, Any] | None, table: dict[str, tuple[str, ...]]) -> dict[str, int | None]:
    return {field: _dig(data, path) for field, path in table.items()}


def openai_usage(data: dict[str, Any] | None) -> Usage | None:
    if not data:
        return None
    got = read_usage(data, OPENAI_USAGE)
    for field, paths in OPENAI_USAGE_ALIASES.items():
        for path in paths:
            if got[field] is None:
                got[field] = _dig(data, path)
    return Usage(
        input_tokens=got["input_tokens"] or 0,
        output_tokens=got["output_tokens"] or 0,
        cached_tokens=got["cached_tokens"] or 0,
        reasoning_tokens=got["reasoning_tokens"] or 0,
        cache_write_tokens=got["cache_write_tokens"] or 0,
    )


def anthropic_usage(data: dict[str, Any] | None, previous: Usage | None = None) -> Usage:
    """Anthropic usage (cumulative: later reports overwrite the fields they carry)."""
    got = read_usage(data, ANTHROPIC_USAGE)
    base = previous or Usage()
    cached = got["cached_tokens"] if got["cached_tokens"] is not None else base.cached_tokens
    written = got["cache_write_tokens"] if got["cache_write_tokens"] is not None else base.cache_write_tokens
    uncached = got["uncached_input"]
    input_tokens = uncached + cached + written if uncached is not None else base.input_tokens
    return Usage(
        input_tokens=input_tokens,
        output_tokens=got["output_tokens"] if got["output_tokens"] is not None else base.output_tokens,
        cached_tokens=cached,
        cache_write_tokens=written,
        reasoning_tokens=got["reasoning_tokens"] if got["reasoning_tokens"] is not None else base.reasoning_tokens,
    )
