"""What every dialect's request schemas share: strict types, bounded numbers, one JSON reader.

Types are strict, as OpenAI's and Anthropic's own APIs are: ``"stream": "yes"`` or
``"max_tokens": "16"`` is refused naming the field, never coerced and billed. The one widening
kept is an integer where a number is expected (``"temperature": 1``), which JSON cannot tell apart.

Every wire model is configured ``strict=True, allow_inf_nan=False``. Every number that reaches
the gateway is bounded, at any depth: integers fit in 64 bits (an engine, a store column or a
serializer would otherwise fail on them later, as a 500), floats are finite. Free-form JSON (tool
schemas, tool inputs) is ``JsonObject``, checked the same way. Every integer field has an upper
bound (tests/hostile checks the OpenAPI document for one).

The body is read by one function, ``read_json``: invalid UTF-8, lone surrogates, ``NaN`` and
``Infinity`` literals, nesting deeper than jiter's limit (200) and **duplicate keys** are refused
with a 400. Duplicate keys are refused, not resolved (RFC 8259 leaves their meaning open): two
parsers in a chain that pick different copies could be made to disagree about what was asked.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import jiter
from pydantic import AfterValidator, Field

from gatewright.core.errors import InvalidRequest

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1

Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
# The bound of counts (tokens, budgets): far above any model's limits, far below any overflow.
MAX_COUNT = INT32_MAX


def _bounded(value: Any) -> Any:
    """Free-form JSON, checked by the same number rules as typed fields (one pass, no recursion)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, float) and not math.isfinite(item):
            raise ValueError("numbers must be finite")
        elif isinstance(item, int) and not isinstance(item, bool) and not INT64_MIN <= item <= INT64_MAX:
            raise ValueError("integers must fit in 64 bits")
    return value


JsonObject = Annotated[dict[str, Any], AfterValidator(_bounded)]
JsonAny = Annotated[Any, AfterValidator(_bounded)]


def read_json(body: bytes) -> Any:
    """The request body as Python objects, or ``InvalidRequest`` saying what is wrong with it."""
    try:
        return jiter.from_json(body, catch_duplicate_keys=True, allow_inf_nan=False)
    except ValueError as error:
        raise InvalidRequest(
            f"We could not parse the JSON body of your request: {str(error)[:200]}.", code="invalid_json"
        ) from None
