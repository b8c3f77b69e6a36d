"""The embedded embedder against its reference implementation (sentence-transformers on PyTorch,
vectors committed in tests/fixtures/embeddings/reference.json with the script that made them).

Runs the real backend in-process: the packaged weights (sha256-checked, converted to GGUF), the
model's own tokenizer, llama.cpp. A tokenizer setting (the shipped file pads and cuts to 128
tokens), a pooling or a normalisation mistake would move the vectors far below these cosines.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from gatewright.backends.embedder.backend import EmbedderBackend
from gatewright.backends.registry import BackendEnv
from gatewright.backends.weights import PACKAGED_DIRS, WeightsError, resolve_embedding_model
from gatewright.core.backend import CallContext
from gatewright.core.catalog import ModelEntry
from gatewright.core.types import EmbeddingRequest
from gatewright.settings import Settings
from tests.embeddings.conftest import local, reference, unit

REF = reference()
SENTENCES: list[str] = REF["sentences"]
MAX_SEQ = REF["max_seq_length"]


@pytest.fixture(scope="module")
async def embedder() -> AsyncIterator[EmbedderBackend]:
    entry = ModelEntry.model_validate({**local("minilm", 0.0), "options": {"workers": 2}})
    backend = EmbedderBackend(entry.deployments[0], entry, BackendEnv(model_cache=Settings().model_cache))
    await backend.start()
    yield backend
    await backend.close()


async def embed(backend: EmbedderBackend, inputs: list[str], truncate: int | None = None) -> np.ndarray:  # type: ignore[type-arg]
    request = EmbeddingRequest(model="minilm", inputs=tuple(inputs), truncate=truncate)
    counts, exact = await backend.count_input_tokens(request)
    assert exact
    result = await backend.embed(request, CallContext("test"))
    assert result.usage.input_tokens == sum(min(n, truncate or n) for n in counts)
    return result.vectors


async def test_vectors_match_the_reference(embedder: EmbedderBackend) -> None:
    # The last sentence is longer than the reference reads: cut like it, at max_seq_length.
    vectors = await embed(embedder, SENTENCES, truncate=MAX_SEQ)
    assert vectors.shape == (len(SENTENCES), 384) and vectors.dtype == np.float32
    cosines = (unit(vectors) * unit(REF["vectors"])).sum(axis=1)
    assert cosines.min() > 0.999, cosines
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)  # the model normalises
    # Each vector is nearest its own reference by a margin: a constant or mis-pooled vector is not.
    cross = unit(vectors) @ unit(REF["vectors"]).T
    others = cross - 2 * np.eye(len(SENTENCES))
    assert (np.diag(cross) - others.max(axis=1)).min() > 0.05


async def test_token_counts_are_the_reference_tokenizers(embedder: EmbedderBackend) -> None:
    request = EmbeddingRequest(model="minilm", inputs=tuple(SENTENCES))
    counts, _ = await embedder.count_input_tokens(request)
    assert [min(n, MAX_SEQ) for n in counts] == REF["tokens"]
    assert counts[-1] > MAX_SEQ  # the long one is really cut by the reference


async def test_one_at_a_time_equals_the_batch(embedder: EmbedderBackend) -> None:
    batch = await embed(embedder, SENTENCES[:6])
    singles = np.vstack([await embed(embedder, [s]) for s in SENTENCES[:6]])
    # llama.cpp sums in another order when sequences share a batch: equal to float rounding.
    assert np.abs(batch - singles).max() < 1e-4
    assert (unit(batch) * unit(singles)).sum(axis=1).min() > 0.99999


def test_weights_are_checked_and_converted_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = PACKAGED_DIRS["all-minilm-l6-v2"]
    files = resolve_embedding_model("package:all-minilm-l6-v2", tmp_path)
    assert files.gguf.stat().st_size == spec.gguf_size  # and its sha256 was the pinned one, or it would raise
    made = files.gguf.stat().st_mtime_ns
    assert resolve_embedding_model("package:all-minilm-l6-v2", tmp_path).gguf.stat().st_mtime_ns == made
    # A file that is not the one gatewright was built for is refused before anything loads it.
    wrong = dict(spec.files, **{"tokenizer.json": "0" * 64})
    monkeypatch.setitem(PACKAGED_DIRS, "all-minilm-l6-v2", replace(spec, files=wrong))
    with pytest.raises(WeightsError, match=r"tokenizer\.json"):
        resolve_embedding_model("package:all-minilm-l6-v2", tmp_path)
