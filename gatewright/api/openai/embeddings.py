"""``POST /v1/embeddings`` as OpenAI shapes it: parse → to core → ``gateway.embed`` → render.

``input`` is a string, a list of strings, a token array or a list of token arrays (token ids of the
model's own vocabulary); ``encoding_format`` float or base64 (little-endian float32, as OpenAI
sends it). The body is written by hand: a batch of vectors is most of the bytes, and orjson writes
float32 rows straight from the array.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any, Literal

import orjson
from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response

from gatewright.api.deps import authenticate, gateway
from gatewright.api.http import bearer, limit_headers, parse, request_id
from gatewright.api.openai.errors import error_body
from gatewright.api.openai.schemas import Wire
from gatewright.api.wire import INT32_MAX, MAX_COUNT
from gatewright.core.embedding import EmbeddingCall
from gatewright.core.errors import GatewrightError
from gatewright.core.types import EmbeddingInput, EmbeddingRequest

TokenArray = list[Annotated[int, Field(ge=0, le=INT32_MAX)]]  # token ids


class EmbeddingsRequest(Wire):
    model: str
    input: str | list[str] | TokenArray | list[TokenArray]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1, le=MAX_COUNT)
    user: str | None = None
    # vLLM's extension: cut each input to this many tokens (-1: the model's limit) instead of a 400.
    truncate_prompt_tokens: int | None = Field(None, ge=-1, le=MAX_COUNT)


def to_core(wire: EmbeddingsRequest) -> EmbeddingRequest:
    raw: Any = wire.input
    inputs: tuple[EmbeddingInput, ...]
    if isinstance(raw, str):
        inputs = (raw,)
    elif raw and isinstance(raw[0], int):
        inputs = (tuple(raw),)
    else:
        inputs = tuple(item if isinstance(item, str) else tuple(item) for item in raw)
    truncate = wire.truncate_prompt_tokens
    return EmbeddingRequest(
        model=wire.model,
        inputs=inputs,
        dimensions=wire.dimensions,
        user=wire.user,
        truncate=None if truncate is None else max(truncate, 0),  # 0: the model's limit
    )


def render(call: EmbeddingCall, encoding: str) -> bytes:
    result = call.result
    vectors = result.vectors
    data: list[dict[str, Any]]
    if encoding == "base64":
        rows = vectors.astype("<f4", copy=False)
        data = [
            {"object": "embedding", "index": i, "embedding": base64.b64encode(row.tobytes()).decode()}
            for i, row in enumerate(rows)
        ]
    else:
        data = [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(vectors)]
    tokens = result.usage.input_tokens
    body: dict[str, Any] = {
        "object": "list",
        "data": data,
        "model": call.entry.id,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    if result.cost is not None:
        usage: dict[str, Any] = {"credits_used": result.cost.credits, "usd_spent": result.cost.usd}
        if result.usage.estimated:
            usage["estimated"] = True
        body["meta"] = {"usage": usage}
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


async def embeddings(request: Request) -> Response:
    try:
        principal = await authenticate(request, bearer(request))
        wire = parse(EmbeddingsRequest, await request.body())
        call = await gateway(request).embed(to_core(wire), principal, request_id(request))
    except GatewrightError as error:
        headers = limit_headers(getattr(error, "limits", None))
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            headers["retry-after"] = str(max(1, round(retry_after)))
        return Response(orjson.dumps(error_body(error)), error.status, headers, media_type="application/json")
    headers = {**limit_headers(call.limits), "x-gatewright-deployment": call.deployment}
    if call.result.usage.estimated:
        headers["x-gatewright-usage"] = "estimated"
    return Response(render(call, wire.encoding_format), 200, headers, media_type="application/json")
