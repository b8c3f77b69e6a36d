"""The one place that reaches into llama-cpp-python below its public ``Llama`` class.

The batched engine needs what ``Llama`` hides: a context holding several sequences
(``n_seq_max``), batches that mix them, one logits row per sequence and per-sequence KV cells.
``llama_cpp._internals`` owns loading and freeing the native model and context; everything else
is llama.cpp's C API as llama-cpp-python 0.3.36 binds it (pinned: these names move between
versions).
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import TYPE_CHECKING

import llama_cpp
import llguidance
import numpy as np
from llama_cpp import _internals as internals
from llama_cpp._logger import set_verbose
from llguidance.llamacpp import lltokenizer_from_vocab

if TYPE_CHECKING:
    import numpy.typing as npt


class Model:
    """A GGUF's weights and vocabulary, and one context with ``slots`` sequences of ``n_ctx``
    tokens each (a KV stream per sequence, so a sequence's cells never interleave with another's)."""

    def __init__(self, path: str, n_ctx: int, slots: int, n_threads: int, n_batch: int) -> None:
        set_verbose(False)  # llama.cpp's load and context logs, as ``Llama(verbose=False)``
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = 0
        self._model = internals.LlamaModel(path_model=path, params=model_params, verbose=False)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx * slots
        params.n_batch = n_batch
        params.n_ubatch = n_batch
        params.n_seq_max = slots
        params.kv_unified = False
        params.n_threads = n_threads
        params.n_threads_batch = n_threads
        # As ``Llama`` sets it, so a sequence alone computes what the single-sequence engine did.
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        try:
            self._context = internals.LlamaContext(model=self._model, params=params, verbose=False)
        except Exception:
            self._model.close()  # type: ignore[no-untyped-call]
            raise
        self.ctx = self._context.ctx
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.vocab = self._model.vocab
        self.n_ctx = n_ctx
        self.n_vocab = self._model.n_vocab()
        self.metadata: dict[str, str] = self._model.metadata()

    def tokenize(self, text: str) -> list[int]:
        tokens: list[int] = self._model.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        return tokens

    def token_text(self, token: int) -> str:
        """A special token's text (``<|im_end|>``), "" when the model has no such token."""
        return self._model.token_get_text(token) if token >= 0 else ""

    def token_bos(self) -> int:
        return int(self._model.token_bos())

    def token_eos(self) -> int:
        return int(self._model.token_eos())

    def is_eog(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    def piece(self, token: int, buffer: ctypes.Array[ctypes.c_char]) -> bytes:
        size = llama_cpp.llama_token_to_piece(self.vocab, token, buffer, len(buffer), 0, False)
        return buffer.raw[: max(size, 0)]

    def decode(self, batch: Batch) -> None:
        status = llama_cpp.llama_decode(self.ctx, batch.batch)
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status}")

    def logits(self, row: int) -> npt.NDArray[np.single]:
        """The logits of batch row ``row`` of the last decode, as a writable view."""
        pointer = llama_cpp.llama_get_logits_ith(self.ctx, row)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))

    def forget(self, seq: int, start: int = 0) -> None:
        """Drop a sequence's cells from position ``start`` on."""
        llama_cpp.llama_memory_seq_rm(self.memory, seq, start, -1)

    def save(self, seq: int) -> bytes:
        size = llama_cpp.llama_state_seq_get_size(self.ctx, seq)
        if size <= 0:
            return b""
        buffer = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(self.ctx, buffer, size, seq)
        return bytes(buffer)[:written] if written > 0 else b""

    def load(self, seq: int, data: bytes) -> bool:
        self.forget(seq)
        buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        return bool(llama_cpp.llama_state_seq_set_data(self.ctx, buffer, len(data), seq))

    def close(self) -> None:
        self._context.close()  # type: ignore[no-untyped-call]
        self._model.close()  # type: ignore[no-untyped-call]


class Batch:
    """A reusable ``llama_batch`` of up to ``size`` tokens, one sequence id each."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.batch = llama_cpp.llama_batch_init(size, 0, 1)
        self.n = 0

    def clear(self) -> None:
        self.n = 0
        self.batch.n_tokens = 0

    def add(self, tokens: Sequence[int], start: int, seq: int, last_logits: bool) -> int:
        """Append tokens at positions ``start``…; returns the row of the last one."""
        batch = self.batch
        for offset, token in enumerate(tokens):
            i = self.n + offset
            batch.token[i] = token
            batch.pos[i] = start + offset
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = 0
        self.n += len(tokens)
        batch.n_tokens = self.n
        if last_logits:
            batch.logits[self.n - 1] = 1
        return self.n - 1

    def close(self) -> None:
        llama_cpp.llama_batch_free(self.batch)


class Sampler:
    """llama.cpp's sampler chain with the same links, in the same order, as ``Llama.generate``
    builds (penalties over the last 64 tokens, top-k, typical, top-p, min-p, temperature, seeded
    draw), so a seed gives the text it gave through ``Llama``. Logits processors run before it,
    on the logits row itself."""

    def __init__(
        self,
        n_vocab: int,
        *,
        temperature: float,
        top_k: int,
        top_p: float,
        frequency_penalty: float,
        presence_penalty: float,
        seed: int,
    ) -> None:
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        self.chain = chain
        links = [llama_cpp.llama_sampler_init_penalties(n_vocab, 64, 1.0, frequency_penalty, presence_penalty)]
        if temperature < 0.0:
            links.append(llama_cpp.llama_sampler_init_dist(seed))
        elif temperature == 0.0:
            links.append(llama_cpp.llama_sampler_init_greedy())
        else:
            links += [
                llama_cpp.llama_sampler_init_top_k(top_k),
                llama_cpp.llama_sampler_init_typical(1.0, 1),
                llama_cpp.llama_sampler_init_top_p(top_p, 1),
                llama_cpp.llama_sampler_init_min_p(0.0, 1),
                llama_cpp.llama_sampler_init_temp(temperature),
                llama_cpp.llama_sampler_init_dist(seed),
            ]
        for link in links:
            llama_cpp.llama_sampler_chain_add(chain, link)

    def sample(self, model: Model, row: int) -> int:
        """Draw from batch row ``row``'s logits (as processors left them) and remember the token."""
        return int(llama_cpp.llama_sampler_sample(self.chain, model.ctx, row))

    def close(self) -> None:
        if self.chain is not None:
            llama_cpp.llama_sampler_free(self.chain)
            self.chain = None


def llguidance_tokenizer(model: Model) -> llguidance.LLTokenizer:
    tokenizer: llguidance.LLTokenizer = lltokenizer_from_vocab(model.vocab)
    return tokenizer
