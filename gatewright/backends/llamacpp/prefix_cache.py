"""Snapshots of the KV cells of long prompt prefixes, kept in RAM and bounded in bytes.

Each slot of the engine remembers only the last sequence it evaluated, so more conversations than
slots taking turns would each re-process their shared system prompt. Here, after the prefill of a
long prompt, the KV cells of its aligned prefix are copied out (``llama_state_seq_get_data``: a
memcpy, ~12 KB per token for a 0.5B model), and a later prompt starting with the same tokens
restores them into its slot instead of evaluating again. Restored cells are bit-identical to
computed ones, so output does not change.

A prefix a request marks with ``cache_control`` is *pinned* (``pin``): kept whatever its length
until its TTL passes, and evicted only once no unpinned snapshot is left. Pins are bounded twice:
the whole cache stays within ``capacity`` bytes, and pinned snapshots within ``pin_capacity`` (a
new pin beyond it unpins the least recently used pins, which then age out as ordinary snapshots),
so marked prompts can never take all the room from the automatic snapshots.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Snapshot:
    tokens: np.ndarray  # the prefix whose KV cells `data` holds
    data: bytes


def common_prefix(a: Sequence[int] | np.ndarray, b: Sequence[int] | np.ndarray) -> int:
    size = min(len(a), len(b))
    if size == 0:
        return 0
    left = np.asarray(a[:size], dtype=np.intc)
    differ = np.nonzero(left != np.asarray(b[:size], dtype=np.intc))[0]
    return int(differ[0]) if differ.size else size


class PrefixCache:
    """LRU of snapshots; ``capacity`` bytes at most, prefixes of ``min_tokens`` or more only (pins
    excepted); pinned ones ``pin_capacity`` bytes at most (half the capacity unless told)."""

    def __init__(
        self,
        capacity: int,
        min_tokens: int,
        pin_capacity: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = capacity
        self.min_tokens = min_tokens
        self.pin_capacity = min(capacity, capacity // 2 if pin_capacity is None else pin_capacity)
        self._clock = clock
        self._entries: OrderedDict[bytes, Snapshot] = OrderedDict()
        self._size = 0
        self._pins: dict[bytes, float] = {}  # key → clock() it is pinned until
        self._pinned_size = 0
        self._token_bytes = 0.0  # a snapshot's size per token, once one was taken

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size(self) -> int:
        return self._size

    @property
    def pinned_size(self) -> int:
        self._expire()
        return self._pinned_size

    def best(self, tokens: Sequence[int]) -> tuple[Snapshot | None, int]:
        """The snapshot sharing the longest prefix with ``tokens``, and that length."""
        best: Snapshot | None = None
        length = 0
        for snapshot in self._entries.values():
            shared = common_prefix(snapshot.tokens, tokens)
            if shared > length:
                best, length = snapshot, shared
        return best, length

    def used(self, snapshot: Snapshot) -> None:
        """``snapshot`` was restored: the most recently used now. (Looking one up is no use: every
        prompt shares a template's first tokens with every snapshot.)"""
        key = snapshot.tokens.tobytes()
        if key in self._entries:
            self._entries.move_to_end(key)

    def wants(self, tokens: Sequence[int]) -> bool:
        if self.capacity <= 0 or len(tokens) < self.min_tokens:
            return False
        _, shared = self.best(tokens)
        return shared < len(tokens)

    def holds(self, tokens: Sequence[int]) -> bool:
        """A snapshot of exactly ``tokens`` is kept."""
        return _key(tokens) in self._entries

    def can_pin(self, length: int) -> bool:
        """A snapshot of ``length`` tokens would fit in the pins' share (as far as known yet)."""
        return self.pin_capacity > 0 and length * self._token_bytes <= self.pin_capacity

    def pinned(self, tokens: Sequence[int]) -> bool:
        self._expire()
        return _key(tokens) in self._pins

    def save(self, tokens: Sequence[int], data: bytes) -> None:
        """Keep ``data``, the KV cells of exactly ``tokens``."""
        if not data or len(data) > self.capacity:
            return
        self._store(tokens, data)
        self._evict()

    def pin(self, tokens: Sequence[int], ttl: float, data: Callable[[], bytes]) -> bool:
        """Keep the snapshot of exactly ``tokens`` at least ``ttl`` seconds from now (longer if
        pinned for longer already); ``data()`` gives its cells when it is not kept yet. True when
        it was written now (False: kept already, or too big for the pins' share)."""
        key = _key(tokens)
        self._expire()
        written = False
        if key not in self._entries:
            cells = data()
            if not cells or len(cells) > self.pin_capacity:
                return False
            self._store(tokens, cells)
            written = True
        if key not in self._pins:
            self._pinned_size += len(self._entries[key].data)
        self._pins[key] = max(self._pins.get(key, 0.0), self._clock() + ttl)
        self._entries.move_to_end(key)
        while self._pinned_size > self.pin_capacity:  # the least recently used pins give way
            self._unpin(next(k for k in self._entries if k in self._pins))
        self._evict()
        return written

    def _store(self, tokens: Sequence[int], data: bytes) -> None:
        array = np.asarray(tokens, dtype=np.intc)
        key = array.tobytes()
        old = self._entries.pop(key, None)
        if old is not None:
            self._size -= len(old.data)
            if key in self._pins:
                self._pinned_size += len(data) - len(old.data)
        self._entries[key] = Snapshot(array, data)
        self._size += len(data)
        self._token_bytes = max(self._token_bytes, len(data) / max(len(array), 1))

    def _unpin(self, key: bytes) -> None:
        del self._pins[key]
        self._pinned_size -= len(self._entries[key].data)

    def _expire(self) -> None:
        now = self._clock()
        for key in [key for key, until in self._pins.items() if until <= now]:
            self._unpin(key)  # an expired pin ages out as an ordinary snapshot

    def _evict(self) -> None:
        """Least recently used first, pinned snapshots only once no other is left."""
        self._expire()
        while self._size > self.capacity and self._entries:
            victim = next((key for key in self._entries if key not in self._pins), None)
            if victim is None:  # cannot happen while pin_capacity <= capacity; kept as a bound
                victim = next(iter(self._entries))
                self._unpin(victim)
            self._size -= len(self._entries.pop(victim).data)


def _key(tokens: Sequence[int]) -> bytes:
    return np.asarray(tokens, dtype=np.intc).tobytes()
