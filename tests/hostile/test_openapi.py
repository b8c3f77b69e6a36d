"""``GET /openapi.json``: every public route, built from the models that validate requests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from starlette.routing import Route

from gatewright.app import OPERATIONS
from tests.hostile.conftest import InProcess
from tests.hostile.test_fuzz import DOC


def _schemas(value: Any, at: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(value, dict):
        yield at, value
        for key, item in value.items():
            yield from _schemas(item, f"{at}/{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _schemas(item, f"{at}/{index}")


def test_every_served_route_is_documented(gw: InProcess) -> None:
    served = {
        (route.path, method.lower())
        for route in gw.client.app.routes  # type: ignore[attr-defined]
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }
    documented = {(path, method) for path, item in DOC["paths"].items() for method in item}
    assert served == documented


def test_document_names_security_schemes_and_error_objects(gw: InProcess) -> None:
    doc = gw.client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    schemes = doc["components"]["securitySchemes"]
    assert {"apiKey", "managementKey", "anthropicApiKey"} <= set(schemes)
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            for requirement in operation["security"]:
                assert set(requirement) <= set(schemes), (path, method)
            ref = operation["responses"]["4XX"]["content"]["application/json"]["schema"]["$ref"]
            assert ref.rsplit("/", 1)[1] in doc["components"]["schemas"]
    chat = doc["paths"]["/v1/chat/completions"]["post"]
    assert chat["security"] == [{"apiKey": []}]
    assert doc["paths"]["/v1/keys"]["post"]["security"] == [{"managementKey": []}]


def test_every_integer_is_bounded() -> None:
    """An unbounded integer field is how a huge number reaches an engine, a column or a serializer."""
    for at, schema in _schemas(DOC["components"]["schemas"]):
        if schema.get("type") == "integer":
            assert "maximum" in schema and "minimum" in schema, at


def test_every_operation_is_in_the_table() -> None:
    assert len({(op.method, op.path) for op in OPERATIONS}) == len(OPERATIONS)
