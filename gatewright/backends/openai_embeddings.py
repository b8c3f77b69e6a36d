"""Embeddings from an OpenAI-compatible upstream (vLLM, llama.cpp's server, TEI's OpenAI route):
``POST {base_url}/embeddings``, asked for floats (every such server speaks them), read into one
float32 array in input order. Usage is the upstream's ``prompt_tokens``, else our estimate, marked.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import orjson

from gatewright.backends.upstream import HttpUpstream, client_for, estimate_tokens, mapped_errors, status_error
from gatewright.core.backend import CallContext
from gatewright.core.errors import UpstreamError
from gatewright.core.types import EmbeddingRequest, Embeddings, Usage

PATH = "/embeddings"


def wire_request(request: EmbeddingRequest, upstream_model: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": upstream_model,
        "input": [item if isinstance(item, str) else list(item) for item in request.inputs],
        "encoding_format": "float",
    }
    optional = {"dimensions": request.dimensions, "user": request.user, "truncate_prompt_tokens": request.truncate}
    body.update({k: v for k, v in optional.items() if v is not None})
    return body


def estimate(request: EmbeddingRequest) -> tuple[list[int], bool]:
    """Token arrays count exactly; text is estimated (the upstream's tokenizer is not ours)."""
    counts = [estimate_tokens(item) if isinstance(item, str) else len(item) for item in request.inputs]
    return counts, all(not isinstance(item, str) for item in request.inputs)


def _vector(item: Any) -> Any:
    embedding = item.get("embedding") if isinstance(item, dict) else None
    if isinstance(embedding, str):  # an upstream that answers base64 whatever was asked
        return np.frombuffer(base64.b64decode(embedding), dtype="<f4")
    return embedding


def read_answer(upstream: HttpUpstream, raw: bytes, request: EmbeddingRequest) -> Embeddings:
    name = upstream.deployment.name
    try:
        data = orjson.loads(raw)
        items = sorted(data["data"], key=lambda item: int(item.get("index", 0)))
        vectors = np.array([_vector(item) for item in items], dtype=np.float32)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        raise UpstreamError(f"upstream {name} sent an embeddings answer gatewright cannot read") from None
    if vectors.ndim != 2 or len(vectors) != len(request.inputs):
        raise UpstreamError(f"upstream {name} sent {len(vectors)} vectors for {len(request.inputs)} inputs")
    reported = data.get("usage") if isinstance(data, dict) else None
    tokens = reported.get("prompt_tokens") if isinstance(reported, dict) else None
    if isinstance(tokens, int) and tokens >= 0:
        usage = Usage(input_tokens=tokens)
    else:
        usage = Usage(input_tokens=sum(estimate(request)[0]), estimated=True)
    return Embeddings(vectors=vectors, usage=usage)


async def embed(upstream: HttpUpstream, request: EmbeddingRequest, ctx: CallContext) -> Embeddings:
    body = orjson.dumps(wire_request(request, upstream.upstream_model))
    url = (upstream.deployment.base_url or "").rstrip("/") + PATH
    upstream._in_flight += 1
    try:
        with mapped_errors(upstream.deployment):
            answer = await client_for(upstream.deployment).post(url, body, upstream.headers)
    finally:
        upstream._in_flight -= 1
    if answer.status >= 400:
        raise status_error(upstream.deployment, answer.status, answer.headers, answer.body)
    result = read_answer(upstream, answer.body, request)
    ctx.usage = result.usage
    return result
