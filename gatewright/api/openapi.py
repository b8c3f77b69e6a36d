"""The public routes as one table, and ``GET /openapi.json`` built from it.

Each dialect lists its routes as ``Operation`` rows: path, method, handler, and the pydantic models
that validate the body or query string. The application serves the rows (``routes_of``) and
documents the same rows (``document``), so the document cannot drift from what is validated, and
the fuzz tests (tests/hostile) reach every route a dialect registers, new ones included.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

Endpoint = Callable[[Request], Awaitable[Response]]
_QUALIFIED = re.compile(r"gatewright__api__(\w+?)__\w+?__(\w+)")

# How callers prove who they are. A route lists the schemes it accepts (any one of them).
SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "apiKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key: `gw-` and 32 hex characters (keys made before key prefixes are 32 hex "
        "characters and keep working). Calls models, reads its own usage and the balance.",
    },
    "managementKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "A management key: `gwm-` and 32 hex characters. Manages keys and credits.",
    },
    "operatorKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "The operator's key: `gwo-` and 32 hex characters, apart from every account. "
        "Manages accounts, credits and redemption codes (`/v1/admin/…`); never calls models.",
    },
    "anthropicApiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "x-api-key",
        "description": "An API key in Anthropic's header (what the Anthropic SDKs send).",
    },
    "consoleSession": {
        "type": "apiKey",
        "in": "cookie",
        "name": "gw_console",
        "description": "The web console's session (`POST /ui/session`); state-changing calls also need "
        "its CSRF token in `x-csrf-token`.",
    },
    "metricsKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "The operator's metrics key (`GATEWRIGHT_METRICS_KEY`); needed only when it is set.",
    },
}

# The error object of each dialect, for the document's error answers.
_STRING = {"type": "string"}
_NULLABLE_STRING = {"type": ["string", "null"]}
ERROR_SCHEMAS: dict[str, dict[str, Any]] = {
    "openai": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type"],
                "properties": {
                    "message": _STRING,
                    "type": _STRING,
                    "param": _NULLABLE_STRING,
                    "code": _NULLABLE_STRING,
                },
            }
        },
    },
    "anthropic": {
        "type": "object",
        "required": ["type", "error"],
        "properties": {
            "type": {"const": "error"},
            "error": {
                "type": "object",
                "required": ["type", "message"],
                "properties": {"type": _STRING, "message": _STRING},
            },
            "request_id": _STRING,
        },
    },
    "tasks": {
        "type": "object",
        "required": ["errors"],
        "properties": {
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": _STRING,
                        "message": _STRING,
                        "parameter": _NULLABLE_STRING,
                        "taskType": _NULLABLE_STRING,
                        "taskUUID": _NULLABLE_STRING,
                    },
                },
            }
        },
    },
}


@dataclass(frozen=True, slots=True)
class Operation:
    """One public route, served and documented from the same row."""

    method: str
    path: str
    endpoint: Endpoint
    summary: str
    dialect: str  # whose error object it answers with: a key of ERROR_SCHEMAS
    body: type[BaseModel] | None = None  # validates the JSON body
    query: type[BaseModel] | None = None  # validates the query string
    security: tuple[str, ...] = ("apiKey",)  # any one of these; () for a public route
    aliases: tuple[str, ...] = ()  # the same operation at other paths (e.g. without ``/v1``)
    example: Any = None  # a valid body: shown in the document, and where the fuzz tests start
    tags: tuple[str, ...] = ()

    @property
    def paths(self) -> tuple[str, ...]:
        return (self.path, *self.aliases)


def routes_of(operations: Iterable[Operation]) -> list[BaseRoute]:
    return [Route(path, op.endpoint, methods=[op.method]) for op in operations for path in op.paths]


def _operation_id(op: Operation, path: str) -> str:
    words = [part for part in path.replace("{", "").replace("}", "").split("/") if part]
    return "_".join([op.method.lower(), *words])


def _parameters(op: Operation, path: str) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in (part[1:-1] for part in path.split("/") if part.startswith("{"))
    ]
    if op.query is not None:
        schema = op.query.model_json_schema()
        required = set(schema.get("required", ()))
        for name, prop in schema.get("properties", {}).items():
            params.append({"name": name, "in": "query", "required": name in required, "schema": prop})
    return params


def _responses(op: Operation) -> dict[str, Any]:
    error = {"$ref": f"#/components/schemas/{op.dialect}_error"}
    answer = {
        "description": "An error in the dialect's own format.",
        "content": {"application/json": {"schema": error}},
    }
    return {
        "200": {"description": "Success."},
        "4XX": answer,
        "413": {**answer, "description": "The body is larger than the gateway's limit."},
        "5XX": {**answer, "description": "A server or upstream error (never the caller's input)."},
    }


def document(operations: Sequence[Operation], *, title: str, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``operations``."""
    models = sorted({op.body for op in operations if op.body is not None}, key=lambda m: m.__qualname__)
    refs, defs = models_json_schema(
        [(model, "validation") for model in models], ref_template="#/components/schemas/{model}"
    )
    components = dict(defs.get("$defs", {}))
    components.update({f"{name}_error": schema for name, schema in ERROR_SCHEMAS.items()})
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        for path in op.paths:
            entry: dict[str, Any] = {
                "operationId": _operation_id(op, path),
                "summary": op.summary,
                "tags": list(op.tags or (op.dialect,)),
                "security": [{name: []} for name in op.security],
                "responses": _responses(op),
            }
            if path != op.path:
                entry["x-alias-of"] = op.path  # the same operation: clients may use either path
            if op.body is not None:
                content: dict[str, Any] = {"schema": refs[(op.body, "validation")]}
                if op.example is not None:
                    content["example"] = op.example
                entry["requestBody"] = {"required": True, "content": {"application/json": content}}
            params = _parameters(op, path)
            if params:
                entry["parameters"] = params
            paths.setdefault(path, {})[op.method.lower()] = entry
    doc = {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": SECURITY_SCHEMES},
    }
    # Models of the same name in two dialects get pydantic's module-path names; shorten them to
    # ``openai.UserMessage`` (names and references alike).
    text = _QUALIFIED.sub(lambda m: f"{m.group(1)}.{m.group(2)}", orjson.dumps(doc).decode())
    named: dict[str, Any] = orjson.loads(text)
    return named
