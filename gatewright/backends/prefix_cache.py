"""Snapshots of the KV cache for long prompt prefixes, kept in RAM and bounded in bytes.

The live context only remembers the last sequence it evaluated, so two conversations taking turns
would each re-process their shared system prompt. Here, after the prefill of a long prompt, the
KV cells of its aligned prefix are copied out (``llama_state_seq_get_data``: a memcpy, ~12 KB per
token for a 0.5B model), and a later prompt starting with the same tokens restores them instead of
evaluating again. Restored cells are bit-identical to computed ones, so output does not change.
"""

from __future__ import annotations

import ctypes
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from llama_cpp import (
    llama_context_p,
    llama_state_seq_get_data,
    llama_state_seq_get_size,
    llama_state_seq_set_data,
)

SEQ = 0  # the engine uses one sequence


@dataclass(frozen=True, slots=True)
class Snapshot:
    tokens: np.ndarray  # the prefix whose KV cells `data` holds
    data: bytes


def common_prefix(a: np.ndarray, b: Sequence[int]) -> int:
    size = min(len(a), len(b))
    if size == 0:
        return 0
    differ = np.nonzero(a[:size] != np.asarray(b[:size], dtype=a.dtype))[0]
    return int(differ[0]) if differ.size else size


class PrefixCache:
    """LRU of snapshots; ``capacity`` bytes at most, prefixes of ``min_tokens`` or more only.

    A prefix a request marked with ``cache_control`` is *pinned* (``pin``): kept whatever its length
    until its TTL passes, evicted only when nothing unpinned is left to evict."""

    def __init__(self, capacity: int, min_tokens: int) -> None:
        self.capacity = capacity
        self.min_tokens = min_tokens
        self._entries: OrderedDict[bytes, Snapshot] = OrderedDict()
        self._size = 0
        self._pinned: dict[bytes, float] = {}  # key → time.monotonic() it is pinned until

    def pinned(self, tokens: Sequence[int]) -> bool:
        key = np.asarray(tokens, dtype=np.intc).tobytes()
        return self._pinned.get(key, 0.0) > time.monotonic() and key in self._entries

    def pin(self, ctx: llama_context_p, tokens: Sequence[int], ttl: float) -> None:
        """Snapshot the context's cells for ``tokens`` (exactly what it holds) and keep them ``ttl``
        seconds at least (longer if pinned again)."""
        key = np.asarray(tokens, dtype=np.intc).tobytes()
        until = time.monotonic() + ttl
        self._pinned[key] = max(self._pinned.get(key, 0.0), until)
        if key in self._entries:
            self._entries.move_to_end(key)
            return
        self.save(ctx, tokens)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size(self) -> int:
        return self._size

    def best(self, tokens: Sequence[int]) -> tuple[Snapshot | None, int]:
        """The snapshot sharing the longest prefix with ``tokens``, and that length."""
        best: Snapshot | None = None
        length = 0
        for snapshot in self._entries.values():
            shared = common_prefix(snapshot.tokens, tokens)
            if shared > length:
                best, length = snapshot, shared
        if best is not None:
            self._entries.move_to_end(best.tokens.tobytes())
        return best, length

    def wants(self, tokens: Sequence[int]) -> bool:
        if self.capacity <= 0 or len(tokens) < self.min_tokens:
            return False
        _, shared = self.best(tokens)
        return shared < len(tokens)

    def save(self, ctx: llama_context_p, tokens: Sequence[int]) -> None:
        """Copy the context's cells for ``tokens`` (which must be exactly what it holds)."""
        size = llama_state_seq_get_size(ctx, SEQ)
        if size <= 0 or size > self.capacity:
            return
        buffer = (ctypes.c_uint8 * size)()
        written = llama_state_seq_get_data(ctx, buffer, size, SEQ)
        if written <= 0:
            return
        key = np.asarray(tokens, dtype=np.intc)
        snapshot = Snapshot(key, bytes(buffer)[:written])
        old = self._entries.pop(key.tobytes(), None)
        if old is not None:
            self._size -= len(old.data)
        self._entries[key.tobytes()] = snapshot
        self._size += len(snapshot.data)
        self._evict()

    def _evict(self) -> None:
        """Least recently used first, pinned prefixes last (expired pins count as unpinned)."""
        now = time.monotonic()
        self._pinned = {k: until for k, until in self._pinned.items() if until > now and k in self._entries}
        while self._size > self.capacity and self._entries:
            victim = next((k for k in self._entries if k not in self._pinned), next(iter(self._entries)))
            dropped = self._entries.pop(victim)
            self._pinned.pop(victim, None)
            self._size -= len(dropped.data)

    @staticmethod
    def restore(ctx: llama_context_p, snapshot: Snapshot) -> bool:
        data = (ctypes.c_uint8 * len(snapshot.data)).from_buffer_copy(snapshot.data)
        return bool(llama_state_seq_set_data(ctx, data, len(snapshot.data), SEQ))
