"""Identifiers: request ids sort by the time they were made, and no two are alike."""

from __future__ import annotations

import random
import re
import time

from gatewright.core.ids import random_hex, request_id


def test_request_ids_sort_in_the_order_they_were_made() -> None:
    made = []
    for _ in range(3):
        made += [request_id() for _ in range(1_000)]
        time.sleep(0.002)  # the next ones carry a later millisecond
    assert all(re.fullmatch(r"req_[0-9a-f]{28}", rid) for rid in made)
    assert len(set(made)) == len(made)
    by_millisecond = [rid[:16] for rid in made]
    assert by_millisecond == sorted(by_millisecond)
    stamp = int(made[-1][4:16], 16)
    assert abs(stamp - time.time() * 1000) < 60_000  # the prefix is the time in milliseconds


def test_random_hex_has_the_width_it_was_asked_for() -> None:
    widths = {len(random_hex(n)) for n in (1, 4, 8, 12, 24) for _ in range(200)}
    assert widths == {2, 8, 16, 24, 48}
    assert len({random_hex(12) for _ in range(10_000)}) == 10_000


def test_ids_do_not_follow_the_global_random_seed() -> None:
    state = random.getstate()
    try:
        random.seed(7)
        first = [random_hex(8), request_id()[16:]]
        random.seed(7)
        assert [random_hex(8), request_id()[16:]] != first
    finally:
        random.setstate(state)
