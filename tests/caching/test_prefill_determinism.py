"""Prompt reuse must not change the numbers: the logits after a prefill are bit-identical whether
the prompt was evaluated from scratch, partly reused from the live context, or restored from a
prefix snapshot. Real model, in-process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from llama_cpp import Llama

from gatewright.backends.llamacpp_engine import Engine
from gatewright.backends.prefix_cache import PrefixCache
from gatewright.backends.weights import assemble

GRANULARITY = 16


class Job:
    cancelled = False


@pytest.fixture(scope="module")
def llm() -> Iterator[Llama]:
    path = assemble("qwen2.5-coder-0.5b-instruct", Path.home() / ".cache" / "gatewright" / "models")
    model = Llama(model_path=str(path), n_ctx=1024, n_threads=2, n_batch=512, verbose=False)
    yield model
    model.close()


def logits(llm: Llama) -> np.ndarray:
    return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).copy()


def fresh(llm: Llama) -> None:
    llm.n_tokens = 0
    llm._ctx.kv_cache_seq_rm(-1, 0, -1)


def test_reuse_from_the_live_context_gives_identical_logits(llm: Llama) -> None:
    prompt = llm.tokenize(b"The ferry crossed the river twice a day, carrying grain and news. " * 8)[:151]
    engine = Engine(llm, GRANULARITY)
    fresh(llm)
    assert engine.prefill(prompt, Job()) == 0
    reference = logits(llm)
    # Previous sequences sharing prefixes of awkward lengths, and one sharing everything.
    for shared in (3, 17, 40, 100, 149, 150):
        fresh(llm)
        other = prompt[:shared] + llm.tokenize(b" something else entirely")
        engine.prefill(other, Job())
        reused = engine.prefill(prompt, Job())
        assert reused == min(shared, len(prompt) - 1) // GRANULARITY * GRANULARITY
        assert np.array_equal(logits(llm), reference), f"logits changed after reusing {reused} tokens"


def test_restore_from_a_snapshot_gives_identical_logits(llm: Llama) -> None:
    system = llm.tokenize(b"Notes: copper, meadow, harbor, violet, thunder, canyon. " * 10)
    first = system + llm.tokenize(b" Question one?")
    second = llm.tokenize(b"Unrelated words to push the first prompt out. " * 6)
    cache = PrefixCache(capacity=64 << 20, min_tokens=32)
    engine = Engine(llm, GRANULARITY, cache)
    fresh(llm)
    engine.prefill(first, Job())
    reference = logits(llm)
    assert len(cache) == 1
    engine.prefill(second, Job())  # the live context now holds something else
    reused = engine.prefill(first, Job())
    assert reused >= len(system) // GRANULARITY * GRANULARITY - GRANULARITY
    assert np.array_equal(logits(llm), reference)
