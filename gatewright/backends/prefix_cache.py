"""Snapshots of the KV cache for long prompt prefixes, kept in RAM and bounded in bytes.

The live context only remembers the last sequence it evaluated, so two conversations taking turns
would each re-process their shared system prompt. Here, after the prefill of a long prompt, the
KV cells of its aligned prefix are copied out (``llama_state_seq_get_data``: a memcpy, ~12 KB per
token for a 0.5B model), and a later prompt starting with the same tokens restores them instead of
evaluating again. Restored cells are bit-identical to computed ones, so output does not change.
"""

from __future__ import annotations

import ctypes
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
    """LRU of snapshots; ``capacity`` bytes at most, prefixes of ``min_tokens`` or more only."""

    def __init__(self, capacity: int, min_tokens: int) -> None:
        self.capacity = capacity
        self.min_tokens = min_tokens
        self._entries: OrderedDict[bytes, Snapshot] = OrderedDict()
        self._size = 0

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
        while self._size > self.capacity and self._entries:
            _, dropped = self._entries.popitem(last=False)
            self._size -= len(dropped.data)

    @staticmethod
    def restore(ctx: llama_context_p, snapshot: Snapshot) -> bool:
        data = (ctypes.c_uint8 * len(snapshot.data)).from_buffer_copy(snapshot.data)
        return bool(llama_state_seq_set_data(ctx, data, len(snapshot.data), SEQ))
