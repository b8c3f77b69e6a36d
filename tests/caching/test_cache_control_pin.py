"""A ``cache_control`` breakpoint pins its prefix in the embedded engine's prefix cache, with the
real model: a system prompt too short for the automatic snapshots (under ``prefix_cache_min_tokens``)
survives another conversation in between when it is marked, and is not kept when it is not."""

from __future__ import annotations

from typing import Any

import anthropic

from tests.caching.test_prompt_cache import system_prompt
from tests.conftest import MODEL
from tests.support.procs import Gateway


def ask(client: anthropic.Anthropic, system: Any, question: str) -> anthropic.types.Message:
    return client.with_options(timeout=900).messages.create(
        model=MODEL, max_tokens=4, system=system, messages=[{"role": "user", "content": question}]
    )


def test_a_marked_prefix_outlives_other_conversations(gateway: Gateway) -> None:
    client = gateway.anthropic()
    short = system_prompt(seed=4242, words=60)  # ~100 tokens: below the automatic snapshots' floor
    marked = [{"type": "text", "text": short, "cache_control": {"type": "ephemeral"}}]
    ask(client, marked, "Name a colour.")
    ask(client, system_prompt(seed=99, words=60), "Name a fruit.")  # the live context moves on
    again = ask(client, marked, "Name a number.")
    # Restored from the pinned snapshot, not evaluated again; Anthropic reports it as a cache read.
    assert again.usage.cache_read_input_tokens and again.usage.cache_read_input_tokens >= 64
    # The same without the mark: nothing of the short prompt is kept once another conversation ran.
    plain = system_prompt(seed=777, words=60)
    ask(client, plain, "Name a colour.")
    ask(client, system_prompt(seed=98, words=60), "Name a fruit.")
    unmarked = ask(client, plain, "Name a number.")
    assert not unmarked.usage.cache_read_input_tokens
