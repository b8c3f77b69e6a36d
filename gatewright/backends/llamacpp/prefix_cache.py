"""Snapshots of the KV cells of long prompt prefixes, kept in RAM and bounded in bytes.

Each slot of the engine remembers only the last sequence it evaluated, so more conversations than
slots taking turns would each re-process their shared system prompt. Here, after the prefill of a
long prompt, the KV cells of its aligned prefix are copied out (``llama_state_seq_get_data``: a
memcpy, ~12 KB per token for a 0.5B model), and a later prompt starting with the same tokens
restores them into its slot instead of evaluating again. Restored cells are bit-identical to
computed ones, so output does not change.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
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

    def save(self, tokens: Sequence[int], data: bytes) -> None:
        """Keep ``data``, the KV cells of exactly ``tokens``."""
        if not data or len(data) > self.capacity:
            return
        key = np.asarray(tokens, dtype=np.intc)
        snapshot = Snapshot(key, data)
        old = self._entries.pop(key.tobytes(), None)
        if old is not None:
            self._size -= len(old.data)
        self._entries[key.tobytes()] = snapshot
        self._size += len(snapshot.data)
        while self._size > self.capacity and self._entries:
            _, dropped = self._entries.popitem(last=False)
            self._size -= len(dropped.data)
