"""Property-based fuzzing of every route in the gateway's own ``/openapi.json``: generated hostile
bodies, query strings and path parameters must never get a 5xx, a crash or internals back, only the
route's own error object (validated against the document's schema for it).

Bodies start from each operation's documented example and are mutated at any depth (a wrong type,
a huge or non-finite number, a missing or unknown field, deep nesting), or replaced by arbitrary
JSON, or broken as bytes (invalid UTF-8, duplicate keys, truncation). A route added to a dialect's
``operations`` table is fuzzed without touching this file. The example budget is fixed and
generation derandomized, so a run is the same every time (and bounded in time)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatewright import __version__
from gatewright.api.openapi import document
from gatewright.app import OPERATIONS
from tests.hostile.conftest import InProcess
from tests.hostile.wire import assert_no_leak

DOC = document(OPERATIONS, title="gatewright", version=__version__)
COMPONENTS = DOC["components"]["schemas"]
ENDPOINTS = sorted((path, method) for path, item in DOC["paths"].items() for method in item)
BUDGET = settings(
    max_examples=60,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


HOSTILE: list[Any] = [
    "16",
    "yes",
    "0.5",
    "",
    "x" * 20_000,
    16.0,
    -1,
    0,
    True,
    None,
    [],
    {},
    2**63,
    -(2**63) - 1,
    10**30,
    1e308,
    -1e308,
    5e-324,
    _nested(64),
    {"a": {"b": {"c": {"d": {"e": {"f": {"g": {}}}}}}}},
    "\u0000\u202e\ufeff",
    "a770f077-f413-47de-9dac-be0b26a35da6",
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**62, max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
hostile_values = st.sampled_from(HOSTILE) | json_values


def _locations(value: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield at
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _locations(item, (*at, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _locations(item, (*at, index))


def _property_names(schema: Any) -> set[str]:
    """Every property name the document knows: mutations add real fields with wrong values too."""
    names: set[str] = set()
    if isinstance(schema, dict):
        names.update(schema.get("properties", {}))
        for value in schema.values():
            names |= _property_names(value)
    elif isinstance(schema, list):
        for value in schema:
            names |= _property_names(value)
    return names - {"webhookURL"}  # never a real outbound request from a fuzz test


NAMES = sorted(_property_names(DOC["components"]["schemas"]))


@st.composite
def mutated(draw: st.DrawFn, example: Any) -> Any:
    body = copy.deepcopy(example)
    at = draw(st.sampled_from(list(_locations(body))))
    if not at:
        return draw(hostile_values)
    parent = body
    for step in at[:-1]:
        parent = parent[step]
    last = at[-1]
    action = draw(st.sampled_from(["replace", "delete", "add"]))
    if action == "delete":
        del parent[last]
    elif action == "add" and isinstance(parent, dict):
        parent[draw(st.sampled_from(NAMES) | st.text(max_size=20))] = draw(hostile_values)
    else:
        parent[last] = draw(hostile_values)
    return body


def _as_bytes(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()  # NaN/Infinity tokens on purpose


@st.composite
def broken_bytes(draw: st.DrawFn, example: Any) -> bytes:
    raw = _as_bytes(example)
    kind = draw(st.sampled_from(["utf8", "truncate", "duplicate", "nest", "random"]))
    if kind == "utf8":
        at = draw(st.integers(0, len(raw)))
        return raw[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\\ud800"])) + raw[at:]
    if kind == "truncate":
        return raw[: draw(st.integers(0, max(len(raw) - 1, 0)))]
    if kind == "duplicate" and isinstance(example, dict) and example:
        key = draw(st.sampled_from(sorted(example)))
        return b"{" + json.dumps(key).encode() + b": " + _as_bytes(draw(hostile_values)) + b", " + raw[1:]
    if kind == "nest":
        depth = draw(st.sampled_from([199, 201, 1000, 50_000]))
        return b'{"x": ' + b"[" * depth + b"]" * depth + b"}"
    return draw(st.binary(max_size=200))


def from_schema(schema: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values the document says are valid (near enough: cross-field rules are not in a schema), so
    that mutations start from every field a route has, not only from its example's."""
    if "$ref" in schema:
        return st.deferred(lambda: from_schema(COMPONENTS[schema["$ref"].rsplit("/", 1)[1]], depth + 1))
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return st.one_of([from_schema(option, depth) for option in schema[key]])
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([from_schema({**schema, "type": one}, depth) for one in kind])
    if depth > 8 or kind is None:
        return json_values
    if kind == "object":
        # Never a real outbound request from a fuzz test: no generated webhookURL (it would be resolved).
        properties = {k: v for k, v in schema.get("properties", {}).items() if k != "webhookURL"}
        required = set(schema.get("required", ()))
        return st.fixed_dictionaries(
            {name: from_schema(properties[name], depth + 1) for name in properties if name in required},
            optional={name: from_schema(properties[name], depth + 1) for name in properties if name not in required},
        )
    if kind == "array":
        low = schema.get("minItems", 0)
        return st.lists(from_schema(schema.get("items", {}), depth + 1), min_size=low, max_size=low + 2)
    if kind == "string":
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True)
        low = schema.get("minLength", 0)
        return st.text(min_size=low, max_size=max(low, min(schema.get("maxLength", 12), 12)))
    if kind == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum"))
    if kind == "number":
        return st.floats(schema.get("minimum"), schema.get("maximum"), allow_nan=False, allow_infinity=False)
    return st.booleans() if kind == "boolean" else st.none()


def bodies(content: dict[str, Any]) -> st.SearchStrategy[bytes]:
    example = content["example"]
    valid = st.just(example) | from_schema(content["schema"])
    return (
        valid.flatmap(mutated).map(_as_bytes)
        | valid.map(_as_bytes)
        | json_values.map(_as_bytes)
        | broken_bytes(example)
    )


def _error_schema(responses: dict[str, Any]) -> dict[str, Any]:
    ref = responses["4XX"]["content"]["application/json"]["schema"]["$ref"]
    return {**DOC["components"]["schemas"][ref.rsplit("/", 1)[1]], "$defs": {}}


def check(response: Any, operation: dict[str, Any]) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:2000])
    if response.status_code >= 400:
        jsonschema.validate(response.json(), _error_schema(operation["responses"]))
    assert_no_leak(response)


def test_the_served_document_is_the_table(gw: InProcess) -> None:
    assert gw.client.get("/openapi.json").json() == json.loads(json.dumps(DOC))


def test_every_body_route_documents_an_example_that_works(gw: InProcess) -> None:
    """The example is where fuzzing starts; one that fails validation would leave the route's depth
    unexplored. Each is valid by the document's schema and accepted by the route."""
    for path, method in ENDPOINTS:
        operation = DOC["paths"][path][method]
        if "requestBody" not in operation:
            continue
        content = operation["requestBody"]["content"]["application/json"]
        assert "example" in content, f"{method.upper()} {path} has no example"
        schema = {**content["schema"], "components": DOC["components"]}
        resolver_schema = {"$ref": content["schema"]["$ref"], "components": DOC["components"]}
        jsonschema.validate(content["example"], resolver_schema)
        assert schema
        headers = gw.headers([name for item in operation["security"] for name in item])
        response = gw.client.request(
            method,
            path.replace("{prefix}", _a_prefix(gw)).replace("{account_id}", "1"),
            json=content["example"],
            headers=headers,
        )
        # Valid, so answered past validation: 200, or 404 where the test catalog has no such model
        # (embeddings: no fake embedding backend) or no such redemption code (the example's code
        # was never minted), or 409 for a task UUID already used.
        assert response.status_code in (200, 404, 409), (path, response.text)
        if response.status_code == 404:
            assert "model" in response.text or "code_not_found" in response.text, response.text


def _a_prefix(gw: InProcess) -> str:
    listed = gw.client.get("/v1/keys", headers=gw.headers(["managementKey"])).json()["data"]
    return str(listed[0]["prefix"])


@pytest.mark.parametrize(("path", "method"), ENDPOINTS)
def test_no_hostile_request_gets_a_5xx(gw: InProcess, path: str, method: str) -> None:
    operation = DOC["paths"][path][method]
    headers = {
        **gw.headers([name for item in operation["security"] for name in item]),
        "content-type": "application/json",
    }
    content = operation.get("requestBody", {}).get("content", {}).get("application/json")
    query_names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"]
    prefix = _a_prefix(gw) if "{prefix}" in path else "999"  # no such account: nothing real is deleted

    @BUDGET
    @given(
        body=bodies(content) if content else st.just(b""),
        query=st.dictionaries(
            st.sampled_from(query_names), st.sampled_from([str(v) for v in HOSTILE]) | st.text(max_size=30)
        )
        if query_names
        else st.just({}),
        segment=st.sampled_from([prefix, "ZZZZ", "../..", "%00", "a" * 5000]) | st.text(min_size=1, max_size=20),
    )
    def run(body: bytes, query: dict[str, str], segment: str) -> None:
        url = path.replace("{prefix}", quote(segment, safe="")).replace("{account_id}", quote(segment, safe=""))
        response = gw.client.request(method.upper(), url, content=body or None, params=query, headers=headers)
        check(response, operation)

    run()
