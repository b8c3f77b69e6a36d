"""Prompt reuse must not change the numbers: the logits after a prefill are bit-identical whether
the prompt was evaluated from scratch, partly reused from the slot's own cells, copied from another
slot, or restored from a prefix snapshot. Real model, in-process, driving the scheduler's prefill
directly (one prompt at a time, as a request alone would run)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gatewright.backends.llamacpp._internals import Model
from gatewright.backends.llamacpp.engine import Context
from gatewright.backends.llamacpp.prefix_cache import PrefixCache
from gatewright.backends.llamacpp.scheduler import WHOLE_TAIL, Scheduler, Slot

GRANULARITY = 16
BUSY: Any = object()  # stands for a choice occupying a slot


def scheduler(model: Model, cache: PrefixCache | None = None) -> Scheduler:
    for seq in range(2):
        model.forget(seq)
    return Scheduler(Context(model), 2, GRANULARITY, 512, 128, cache)


def counting_calls(engine: Scheduler) -> list[int]:
    """The rows of each prompt call the engine makes from now on."""
    calls: list[int] = []
    evaluate = engine._evaluate

    def counted(slot: Slot, tokens: Sequence[int], logits: bool) -> int:
        calls.append(len(tokens))
        return evaluate(slot, tokens, logits)

    engine._evaluate = counted  # type: ignore[method-assign]
    return calls


def prompt_logits(
    engine: Scheduler, tokens: Sequence[int], occupied: Sequence[Slot] = (), chunk: int = 512
) -> tuple[int, np.ndarray]:
    """Place and prefill a prompt (``occupied`` slots count as busy) as a request alone would be
    read; returns the tokens reused and the logits of its last token."""
    for slot in occupied:
        slot.choice = BUSY
    try:
        slot, reused = engine._place(tokens)
    finally:
        for other in occupied:
            other.choice = None
    slot.prompt, slot.choice = list(tokens), BUSY
    row = None
    while row is None:
        row = engine._prefill(slot, chunk)
    slot.choice = None
    return reused, engine.model.logits(row).copy()


def test_reuse_from_the_slot_itself_gives_identical_logits(model: Model) -> None:
    prompt = model.tokenize("The ferry crossed the river twice a day, carrying grain and news. " * 8)[:151]
    engine = scheduler(model)
    assert prompt_logits(engine, prompt)[0] == 0
    reference = prompt_logits(scheduler(model), prompt)[1]
    # Earlier sequences sharing prefixes of awkward lengths, and one sharing everything.
    for shared in (3, 17, 40, 100, 149, 150):
        engine = scheduler(model)
        prompt_logits(engine, prompt[:shared] + model.tokenize(" something else entirely"))
        reused, logits = prompt_logits(engine, prompt)
        assert reused == min(shared, len(prompt) - 2) // GRANULARITY * GRANULARITY
        assert np.array_equal(logits, reference), f"logits changed after reusing {reused} tokens"


def test_chunk_size_does_not_change_the_logits(model: Model) -> None:
    prompt = model.tokenize("Orchards of violet plums lined the canyon road to the marble quarry. " * 9)[:113]
    reference = prompt_logits(scheduler(model), prompt)[1]
    for chunk in (32, 48, 112):  # smaller chunks while others generate; 112: a last call of 17 rows
        assert np.array_equal(prompt_logits(scheduler(model), prompt, chunk=chunk)[1], reference), chunk


def test_copy_from_another_slot_gives_identical_logits(model: Model) -> None:
    prompt = model.tokenize("Lanterns lit the orchard path while the copper bell rang. " * 6)
    reference = prompt_logits(scheduler(model), prompt)[1]
    engine = scheduler(model)
    prompt_logits(engine, prompt[:-5] + model.tokenize(" and then?"))
    holder = next(slot for slot in engine.slots if slot.cells)
    reused, logits = prompt_logits(engine, prompt, occupied=[holder])
    assert reused >= (len(prompt) - 6) // GRANULARITY * GRANULARITY  # copied from the busy slot
    assert np.array_equal(logits, reference)


def test_restore_from_a_snapshot_gives_identical_logits(model: Model) -> None:
    system = model.tokenize("Notes: copper, meadow, harbor, violet, thunder, canyon. " * 10)
    first = system + model.tokenize(" Question one?")
    cache = PrefixCache(capacity=64 << 20, min_tokens=32)
    engine = scheduler(model, cache)
    reference = prompt_logits(engine, first)[1]
    assert len(cache) == 1
    for words in ("Unrelated words to push the first prompt out. ", "Other words again, for the other slot. "):
        prompt_logits(engine, model.tokenize(words * 6))  # both slots now hold something else
    assert all(slot.cells[:8] != first[:8] for slot in engine.slots)
    reused, logits = prompt_logits(engine, first)
    assert reused >= len(system) // GRANULARITY * GRANULARITY - GRANULARITY
    assert np.array_equal(logits, reference)


def test_a_busy_slot_moved_down_to_close_a_gap_keeps_its_cells(model: Model) -> None:
    prompt = model.tokenize("Copper kettles hung over the harbor inn's long table. " * 6)
    reference = prompt_logits(scheduler(model), prompt)[1]
    engine = scheduler(model)
    low, high = engine.slots
    high.prompt, high.choice = list(prompt), BUSY  # a request in seq 1 whose neighbour below ended
    engine._prefill(high, 64)
    engine._compact()  # busy slots go to the lowest ids: llama.cpp batches only consecutive ones
    assert (high.seq, low.seq) == (0, 1) and engine.slots == [high, low] and len(high.cells) == 64
    high.choice = None
    reused, logits = prompt_logits(engine, prompt)  # the rest of the prompt, read in its new seq
    assert reused == 64 and np.array_equal(logits, reference)


def test_a_prompt_read_in_one_call_gives_the_bits_of_one_read_in_two(model: Model) -> None:
    """Past the reuse boundary by 8 tokens or more (``WHOLE_TAIL``), a prompt that fits in a chunk is
    read in one call; its last logits, and the cells a longer prompt then reuses, are the bits of the
    two-call reading (a chunk to the boundary, then the rest)."""
    text = model.tokenize("Silver gulls circled the quarry while tin bells rang in the kelp market. " * 12)
    for length in (136, 139, 143, 145):  # 8, 11, 15 and 17 tokens past the boundary at 128
        prompt, longer = text[:length], text[: length + 40]
        assert len(prompt) - (len(prompt) - 2) // GRANULARITY * GRANULARITY >= WHOLE_TAIL
        two_calls = prompt_logits(scheduler(model), prompt, chunk=32)[1]  # chunks of 32, then the rest
        reference = prompt_logits(scheduler(model), longer, chunk=32)[1]
        engine = scheduler(model)  # (clears what the references left in the model)
        calls = counting_calls(engine)
        one_call = prompt_logits(engine, prompt)[1]
        assert calls == [length]
        assert np.array_equal(one_call, two_calls), length
        reused, logits = prompt_logits(engine, longer)  # reuses cells the one call wrote
        assert reused == min(length, len(longer) - 2) // GRANULARITY * GRANULARITY
        assert np.array_equal(logits, reference), length


def test_a_short_tail_keeps_its_own_call(model: Model) -> None:
    prompt = model.tokenize("Kelp and tin, gulls and bells, the quarry road at noon. " * 12)[:133]  # 5 past 128
    engine = scheduler(model)
    calls = counting_calls(engine)
    prompt_logits(engine, prompt)
    assert calls == [128, 5]
