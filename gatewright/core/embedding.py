"""An embeddings request's way through the gateway: the same keys, limits and ledger as chat.

    resolve model → it must embed → inputs, dimensions → count tokens (limits per input and in all)
    → rate limit → reserve (every input token at the input price) → route → shorten → settle once

Nothing is billed on error, and the 402 comes before any work. ``Gateway.embed`` is the entry.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

import numpy as np

from gatewright.core import tracing
from gatewright.core.backend import CallContext
from gatewright.core.billing import embedding_token_bound, price, worst_case
from gatewright.core.catalog import Catalog, EmbeddingSpec, ModelEntry
from gatewright.core.errors import (
    ContextWindowExceeded,
    GatewrightError,
    InsufficientCredits,
    InvalidRequest,
    PermissionDenied,
    RateLimited,
)
from gatewright.core.metrics import record_refusal, record_usage
from gatewright.core.platform import Dialect, Hold, LimitState, Platform, Principal
from gatewright.core.requestinfo import CURRENT as CURRENT_FACTS
from gatewright.core.routing import Router
from gatewright.core.settling import charge, settle
from gatewright.core.types import Cost, EmbeddingRequest, Embeddings, Usage

log = logging.getLogger("gatewright.pipeline")
DIALECT: Dialect = "openai-embeddings"  # the one API embeddings come through, for the usage record

MODEL_SCOPE = "model:chat"  # the scope that lets a key call models, embedding ones included
_ZERO = Cost(credits=0, usd=0.0)


@dataclass(slots=True)
class EmbeddingCall:
    """A finished embeddings request: the vectors, what they cost, and headers to send."""

    request_id: str
    entry: ModelEntry
    deployment: str
    result: Embeddings
    limits: LimitState | None = None


def embedding_spec(entry: ModelEntry) -> EmbeddingSpec:
    """The model's embedding spec, or the 400 for asking a chat model for embeddings."""
    if entry.type != "embedding" or entry.embedding is None:
        raise InvalidRequest(
            f"The model `{entry.id}` is a {entry.type} model and does not make embeddings; "
            "GET /v1/models lists the embedding models (type `embedding`).",
            param="model",
            code="model_not_embedding",
        )
    return entry.embedding


def check_request(entry: ModelEntry, spec: EmbeddingSpec, request: EmbeddingRequest) -> None:
    """Inputs and dimensions the model cannot take, refused with the parameter to blame."""
    if not request.inputs:
        raise InvalidRequest("'input' must not be empty.", param="input", code="invalid_value")
    if len(request.inputs) > spec.max_inputs:
        raise InvalidRequest(
            f"'input' has {len(request.inputs)} items; the model `{entry.id}` takes at most "
            f"{spec.max_inputs} per request.",
            param="input",
            code="too_many_inputs",
        )
    for i, item in enumerate(request.inputs):
        if len(item) == 0:
            where = "input" if len(request.inputs) == 1 else f"input[{i}]"
            raise InvalidRequest(f"'{where}' must not be empty.", param=where, code="invalid_value")
    wanted = request.dimensions
    if wanted is None or wanted == spec.dimensions:
        return
    if spec.min_dimensions is None:
        raise InvalidRequest(
            f"The model `{entry.id}` makes {spec.dimensions}-dimensional vectors and cannot shorten them; "
            f"leave out 'dimensions' or set it to {spec.dimensions}.",
            param="dimensions",
            code="dimensions_not_supported",
        )
    if not spec.min_dimensions <= wanted <= spec.dimensions:
        raise InvalidRequest(
            f"'dimensions' must be between {spec.min_dimensions} and {spec.dimensions} for the model "
            f"`{entry.id}` (got {wanted}).",
            param="dimensions",
            code="invalid_value",
        )


def billed_tokens(
    entry: ModelEntry, spec: EmbeddingSpec, request: EmbeddingRequest, counts: list[int], exact: bool
) -> tuple[EmbeddingRequest, int]:
    """The request as the backend gets it (a truncation limit made concrete) and the tokens it
    will read in all. An input past the model's context is a 400 naming it, unless the request
    asked for truncation; estimated counts (an upstream's text) are left to the upstream to judge."""
    window = entry.context_window
    limit = request.truncate
    if limit is not None:
        limit = window if limit <= 0 else min(limit, window)
        counts = [min(n, limit) for n in counts]
    elif exact:
        for i, n in enumerate(counts):
            if n > window:
                where = "input" if len(counts) == 1 else f"input[{i}]"
                raise ContextWindowExceeded(
                    f"'{where}' is {n} tokens long; the model `{entry.id}` reads at most {window} tokens "
                    "per input. Shorten it, or set truncate_prompt_tokens to cut it.",
                    param=where,
                    code="context_length_exceeded",
                )
    total = sum(counts)
    if total > spec.max_total_tokens:
        raise InvalidRequest(
            f"'input' adds up to {total} tokens; the model `{entry.id}` takes at most "
            f"{spec.max_total_tokens} tokens per request. Split the inputs over several requests.",
            param="input",
            code="too_many_tokens",
        )
    routed = request if limit == request.truncate else replace(request, truncate=limit)
    return replace(routed, model=entry.id), total


def shorten(vectors: np.ndarray, dimensions: int | None) -> np.ndarray:  # type: ignore[type-arg]
    """The first ``dimensions`` components of each vector, scaled back to unit length."""
    if dimensions is None or vectors.shape[1] <= dimensions:
        return vectors
    cut = np.ascontiguousarray(vectors[:, :dimensions], dtype=np.float32)
    norms = np.linalg.norm(cut, axis=1, keepdims=True)
    np.divide(cut, norms, out=cut, where=norms > 0)
    return cut


async def run_embedding(
    catalog: Catalog,
    router: Router,
    platform: Platform | None,
    request: EmbeddingRequest,
    principal: Principal | None,
    request_id: str,
) -> EmbeddingCall:
    started = time.perf_counter()
    entry = catalog.resolve(request.model)
    if principal is not None and not principal.allows(MODEL_SCOPE):
        raise PermissionDenied(
            f"This API key lacks the scope `{MODEL_SCOPE}` needed to call models.", code="missing_scope"
        )
    if principal is not None and not principal.may_call(entry.id):
        raise PermissionDenied(
            f"This API key may not call the model `{entry.id}`; GET /v1/models with this key lists "
            "the models it may call.",
            param="model",
            code="model_not_allowed",
        )
    _note_request(entry, request, principal)
    spec = embedding_spec(entry)
    check_request(entry, spec, request)
    if request.dimensions == spec.dimensions:
        request = replace(request, dimensions=None)  # the model's own length: nothing to ask an upstream
    counts, exact = await router.count_input_tokens(entry, request)
    request, total = billed_tokens(entry, spec, request, counts, exact)

    limits: LimitState | None = None
    hold: Hold | None = None
    platform = platform if principal is not None else None
    if platform is not None and principal is not None:
        try:
            limits = await platform.limiter.acquire(principal, total)
        except RateLimited as refused:
            record_refusal(refused.status, refused.code)
            raise
        chain = [model for model in router.chain(entry) if model.type == entry.type]
        held = total if exact else max(total, embedding_token_bound(request.inputs, request.truncate))
        credits = max(worst_case(held, 0, model.prices) for model in chain)
        try:
            hold = await platform.ledger.reserve(principal, credits, request_id, entry.id)
        except GatewrightError as error:
            if isinstance(error, InsufficientCredits):
                record_refusal(error.status, error.code)
            raise _with_limits(error, limits) from None

    ctx = CallContext(request_id=request_id, owner=principal.prefix if principal else "")
    try:
        model, deployment, result = await router.embed(entry, request, ctx)
    except GatewrightError as error:
        if platform is not None and hold is not None:
            settle(platform, hold, Usage(), _ZERO, "error", entry.id, DIALECT, started)  # failures cost nothing
        raise _with_limits(error, limits) from None
    except BaseException:
        if platform is not None and hold is not None:
            # Cancelled (the server is stopping): bill what the backend reports it read, if anything.
            cost = price(ctx.usage, entry.prices)
            settle(platform, hold, ctx.usage, cost, "aborted", entry.id, DIALECT, started)
        raise
    result.vectors = shorten(result.vectors, request.dimensions)
    cost = price(result.usage, model.prices)
    if platform is not None and hold is not None:
        cost = await charge(platform, hold, result.usage, cost, model.id, DIALECT, started)
    result.cost = cost
    record_usage(model.id, result.usage.input_tokens, 0, 0, 0, cost.credits)
    _note_result(model.id, deployment.name, result.usage, cost)
    return EmbeddingCall(request_id, model, deployment.name, result, limits)


def _note_request(entry: ModelEntry, request: EmbeddingRequest, principal: Principal | None) -> None:
    """Who asked for what: the request's span (GenAI attributes) and its access line."""
    if tracing.ENABLED:
        attributes: dict[str, str | int | float | bool] = {
            "gen_ai.operation.name": "embeddings",
            "gen_ai.request.model": request.model,
        }
        if principal is not None:
            attributes |= {"gatewright.key_prefix": principal.prefix, "gatewright.account_id": principal.account_id}
        tracing.annotate(attributes)
    facts = CURRENT_FACTS.get()
    if facts is not None:
        facts.model = entry.id
        if principal is not None:
            facts.account_id, facts.key_prefix = principal.account_id, principal.prefix


def _note_result(model: str, deployment: str, usage: Usage, cost: Cost) -> None:
    if tracing.ENABLED:
        tracing.annotate(
            {
                "gen_ai.response.model": model,
                "gen_ai.usage.input_tokens": usage.input_tokens,
                "gatewright.credits": cost.credits,
                "gatewright.outcome": "ok",
            }
        )
    facts = CURRENT_FACTS.get()
    if facts is not None:
        facts.model, facts.deployment, facts.outcome = model, deployment, "ok"
        facts.input_tokens, facts.credits = usage.input_tokens, cost.credits


def _with_limits(error: GatewrightError, limits: LimitState | None) -> GatewrightError:
    if limits is not None and getattr(error, "limits", None) is None:
        error.limits = limits  # type: ignore[attr-defined]
    return error
