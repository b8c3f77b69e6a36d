"""The embedded embedding model: a sentence-transformers BERT (all-MiniLM-L6-v2 by default) on
llama.cpp, tokenized by the model's own ``tokenizer.json``.

Text is tokenized with the Hugging Face ``tokenizers`` library and the reference tokenizer file,
with its padding and truncation switched off (the shipped file pads and cuts every text to 128
tokens, which changes the vectors); llama.cpp gets token ids and pools as the GGUF says;
normalisation follows the model's ``modules.json``. The vectors match sentence-transformers'
to a cosine above 0.99999 (tests/engine/test_embedder_reference.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from gatewright.backends.embedder.engine import BatchQueue, EmbedJob, Worker
from gatewright.backends.registry import BackendEnv
from gatewright.backends.weights import resolve_embedding_model
from gatewright.core.backend import CallContext
from gatewright.core.catalog import Deployment, ModelEntry
from gatewright.core.errors import InternalError, InvalidRequest, Overloaded, UnsupportedFeature
from gatewright.core.events import Event
from gatewright.core.types import CoreRequest, EmbeddingInput, EmbeddingRequest, Embeddings, Usage

# Tokenizing this many texts or more runs off the event loop (the Rust tokenizer frees the GIL).
THREAD_TOKENIZE_FROM = 32


def normalizes(directory: Path) -> bool:
    """Whether the sentence-transformers pipeline ends with a Normalize module."""
    modules = json.loads((directory / "modules.json").read_text(encoding="utf-8"))
    return any(str(m.get("type", "")).endswith(".Normalize") for m in modules)


def cut(ids: list[int], limit: int, text: bool) -> list[int]:
    """At most ``limit`` tokens; a text keeps its closing special token ([SEP]), as the reference
    tokenizer's own truncation does."""
    if len(ids) <= limit:
        return ids
    return ids[: limit - 1] + ids[-1:] if text and limit > 1 else ids[:limit]


class EmbedderBackend:
    def __init__(self, deployment: Deployment, entry: ModelEntry, env: BackendEnv) -> None:
        self.deployment = deployment
        self.entry = entry
        self.env = env
        options = deployment.options
        self.workers_count = int(options.get("workers", os.cpu_count() or 1))
        self.threads = int(options.get("threads", 1))  # per worker
        self.batch_tokens = int(options.get("batch_tokens", 64))
        self.queue = BatchQueue(int(options.get("max_queue_inputs", 16384)))
        self.capacity = max(entry.context_window, self.batch_tokens)
        self.tokenizer: Tokenizer | None = None
        self.workers: list[Worker] = []
        self.vocab_size = 0
        self._in_flight = 0
        # Counting tokens (before billing) and embedding share one tokenization per request.
        self._encoded: OrderedDict[int, tuple[tuple[EmbeddingInput, ...], list[list[int]]]] = OrderedDict()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def loaded(self) -> bool:
        return bool(self.workers)

    async def start(self) -> None:
        if self.workers:
            return
        if not self.deployment.path:
            raise InternalError(f"deployment {self.deployment.name} needs a 'path' to an embedding model")
        files = await asyncio.to_thread(resolve_embedding_model, self.deployment.path, self.env.model_cache)
        tokenizer = Tokenizer.from_file(str(files.directory / "tokenizer.json"))
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self.tokenizer = tokenizer
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        normalize = normalizes(files.directory)
        for n in range(self.workers_count):
            name = f"embedder:{self.entry.id}:{n}"
            worker = await asyncio.to_thread(Worker, str(files.gguf), self.capacity, self.threads, normalize, name)
            worker.thread = threading.Thread(
                target=worker.serve, args=(self.queue, self.batch_tokens), name=name, daemon=True
            )
            worker.thread.start()
            self.workers.append(worker)

    async def close(self) -> None:
        for job in self.queue.close():
            job.fail(Overloaded("The embedding engine is stopping; try again.", code="engine_stopping"))
        for worker in self.workers:
            if worker.thread is not None:
                await asyncio.to_thread(worker.thread.join, 10)
            worker.close()
        self.workers = []

    # -- tokens ----------------------------------------------------------------------------------

    async def _ids(self, inputs: tuple[EmbeddingInput, ...]) -> list[list[int]]:
        cached = self._encoded.get(id(inputs))
        if cached is not None and cached[0] is inputs:
            return cached[1]
        if self.tokenizer is None:
            raise InternalError(f"the model {self.entry.id} is not loaded")
        texts = [item for item in inputs if isinstance(item, str)]
        encodings: list[Encoding] = []
        if texts:
            encode = self.tokenizer.encode_batch_fast
            if len(texts) >= THREAD_TOKENIZE_FROM:
                encodings = await asyncio.to_thread(encode, texts)
            else:
                encodings = encode(texts)
        found = iter(encodings)
        ids: list[list[int]] = []
        for i, item in enumerate(inputs):
            if isinstance(item, str):
                ids.append(next(found).ids)
                continue
            bad = next((t for t in item if not 0 <= t < self.vocab_size), None)
            if bad is not None:
                where = "input" if len(inputs) == 1 else f"input[{i}]"
                raise InvalidRequest(
                    f"'{where}' holds the token id {bad}; the model `{self.entry.id}` has ids 0 to "
                    f"{self.vocab_size - 1} (token arrays are read as the model's own token ids).",
                    param=where,
                    code="invalid_value",
                )
            ids.append(list(item))
        self._encoded[id(inputs)] = (inputs, ids)
        while len(self._encoded) > 64:
            self._encoded.popitem(last=False)
        return ids

    async def count_input_tokens(self, request: EmbeddingRequest) -> tuple[list[int], bool]:
        return [len(ids) for ids in await self._ids(request.inputs)], True

    # -- embeddings ------------------------------------------------------------------------------

    async def embed(self, request: EmbeddingRequest, ctx: CallContext) -> Embeddings:
        if not self.workers:
            raise InternalError(f"the model {self.entry.id} is not loaded")
        ids: Sequence[list[int]] = await self._ids(request.inputs)
        self._encoded.pop(id(request.inputs), None)
        limit = min(request.truncate or self.entry.context_window, self.entry.context_window)
        ids = [cut(x, limit, isinstance(item, str)) for x, item in zip(ids, request.inputs, strict=True)]
        usage = Usage(input_tokens=sum(len(x) for x in ids))
        loop = asyncio.get_running_loop()
        out = np.empty((len(ids), self.workers[0].n_embd), dtype=np.float32)
        job = EmbedJob(ids, loop, loop.create_future(), out)
        self.queue.put(ctx.owner, job)
        self._in_flight += 1
        try:
            vectors = await job.future
        finally:
            job.cancelled = True  # a caller that left frees the workers from its remaining inputs
            self._in_flight -= 1
        ctx.usage = usage
        return Embeddings(vectors=vectors, usage=usage)

    # -- not a chat model: the pipeline refuses chat on embedding models before it gets here ------

    async def count_prompt_tokens(self, request: CoreRequest) -> int:
        raise UnsupportedFeature(f"The model `{self.entry.id}` is an embedding model.", param="model")

    async def stream(self, request: CoreRequest, ctx: CallContext) -> AsyncIterator[Event]:
        raise UnsupportedFeature(f"The model `{self.entry.id}` is an embedding model.", param="model")
        yield  # pragma: no cover
