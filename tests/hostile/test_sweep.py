"""Every field the document names, at every depth, with every kind of wrong value: a deterministic
sweep beside the random fuzzing (test_fuzz.py), so that no field of any route is left to chance.

For each route with a body, the sweep builds the largest body its schema describes (every optional
field present, one item of each kind in every list of unions), then replaces one location at a time
with each value of ``WRONG`` and checks the answer: never a 5xx, always the route's error object."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.hostile.conftest import InProcess
from tests.hostile.test_fuzz import COMPONENTS, DOC, check

# A value for each pattern the document uses; a new pattern fails here until it has one.
PATTERN_EXAMPLES = {
    r"^[a-zA-Z0-9_-]{1,64}$": "f",
    r"^[a-zA-Z0-9_-]{1,128}$": "f",
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-4[0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}$": (
        "0b6c2f9e-7f2a-4c1e-9d43-2f6b7c1a9e10"
    ),
}

WRONG: list[Any] = ["16", 16.5, True, None, 2**64, -(2**64), 1e308, [], {}, "x" * 5000]


def largest(schema: dict[str, Any], depth: int = 0) -> Any:
    if "$ref" in schema:
        return largest(COMPONENTS[schema["$ref"].rsplit("/", 1)[1]], depth + 1)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        real = [o for o in options if o.get("type") != "null"]
        return largest(real[-1] if real else options[0], depth)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next(k for k in kind if k != "null")
    if kind == "object" and depth < 12:
        # No webhookURL: a valid one would be resolved (traffic off the machine), an invalid one would
        # make every request of the sweep fail on it first.
        properties = {k: v for k, v in schema.get("properties", {}).items() if k != "webhookURL"}
        return {name: largest(prop, depth + 1) for name, prop in properties.items()}
    if kind == "array" and depth < 12:
        items = schema.get("items", {})
        choices = items.get("oneOf") or items.get("anyOf") or [items]
        return [largest(choice, depth + 1) for choice in choices]
    if kind == "string":
        if "pattern" in schema:
            return PATTERN_EXAMPLES[schema["pattern"]]
        return "x" * max(schema.get("minLength", 1), 1)
    if kind == "integer":
        return max(schema.get("minimum", 1), min(schema.get("maximum", 1), 1))
    if kind == "number":
        return schema.get("minimum", 0.5) if "minimum" in schema and schema["minimum"] > 0.5 else 0.5
    if kind == "boolean":
        return False
    return {} if kind == "object" else [] if kind == "array" else None


def locations(value: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if at:
        yield at
    if isinstance(value, dict):
        for key, item in value.items():
            yield from locations(item, (*at, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from locations(item, (*at, index))


def replaced(body: Any, at: tuple[Any, ...], value: Any) -> Any:
    copy = json.loads(json.dumps(body))
    parent = copy
    for step in at[:-1]:
        parent = parent[step]
    parent[at[-1]] = value
    return copy


BODY_ROUTES = sorted(
    (path, method)
    for path, item in DOC["paths"].items()
    for method, operation in item.items()
    if "requestBody" in operation and "x-alias-of" not in operation
)


@pytest.mark.parametrize(("path", "method"), BODY_ROUTES)
def test_every_field_with_every_wrong_value(gw: InProcess, path: str, method: str) -> None:
    operation = DOC["paths"][path][method]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    body = largest(schema)
    headers = gw.headers([name for item in operation["security"] for name in item])
    url = path.replace("{prefix}", "00000000")
    spots = list(locations(body))
    assert len(spots) >= len(body), body  # the schema was walked
    for at in spots:
        for value in WRONG:
            response = gw.client.request(
                method.upper(), url, content=json.dumps(replaced(body, at, value)), headers=headers
            )
            try:
                check(response, operation)
            except AssertionError as error:
                raise AssertionError(f"{method.upper()} {path} with {value!r:.60} at {at}: {error}") from None
