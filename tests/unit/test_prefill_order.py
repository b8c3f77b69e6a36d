"""Which waiting prompt the embedded engine reads next (``scheduler.next_to_read``): the shortest
left to read first, the oldest among equals, and a long prompt never passed over indefinitely."""

from __future__ import annotations

from gatewright.backends.llamacpp.scheduler import Slot, next_to_read


def waiting(seq: int, prompt: int, read: int = 0, admitted: int = 0) -> Slot:
    return Slot(seq, cells=[0] * read, prompt=[0] * prompt, admitted=admitted)


def test_the_prompt_with_fewest_tokens_left_goes_first() -> None:
    long, short, cached = waiting(0, 2000, admitted=1), waiting(1, 100, admitted=2), waiting(2, 900, 880, 3)
    assert next_to_read([long, short, cached], 8) is cached  # 20 left
    assert next_to_read([long, short], 8) is short


def test_among_equals_the_oldest_goes_first() -> None:
    first, second = waiting(1, 144, admitted=1), waiting(0, 144, admitted=2)
    assert next_to_read([second, first], 8) is first


def test_a_long_prompt_is_read_at_least_once_in_every_patience_plus_one_steps() -> None:
    long = waiting(0, 4000, admitted=1)
    turns = []
    for step in range(40):  # a new short prompt is always waiting beside it
        short = waiting(1, 40, admitted=step + 2)
        chosen = next_to_read([long, short], 3)
        turns.append(chosen is long)
        if chosen is long:
            long.cells += [0] * 16
    assert all(any(turns[i : i + 4]) for i in range(len(turns) - 3))
    assert sum(turns) == 10  # no more than that: the short ones still go first otherwise
