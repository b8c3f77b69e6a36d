"""What a hostile-input test checks in every answer: the dialect's own error object, no internals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson

import gatewright

ROOT = str(Path(gatewright.__file__).resolve().parent.parent)  # the checkout: file paths

# Words that must never reach a caller: traceback and exception text, SQL, file paths.
LEAKS = ("Traceback", 'File \\"', '.py\\"', "sqlalchemy", "SELECT ", "INSERT ", "Error(", "Exception(", ROOT)


def error_of(dialect: str, response: httpx.Response) -> dict[str, Any]:
    """The error object of ``dialect`` in ``response``, checked for its shape; returns
    ``{"message", "param"}`` (``param`` None where the dialect has no such field)."""
    body = orjson.loads(response.content)
    if dialect == "anthropic":
        assert body["type"] == "error" and isinstance(body["error"]["type"], str), body
        assert isinstance(body["error"]["message"], str) and body["request_id"], body
        return {"message": body["error"]["message"], "param": None}
    if dialect == "tasks":
        assert set(body) == {"errors"} and body["errors"], body
        first = body["errors"][0]
        assert isinstance(first["code"], str) and isinstance(first["message"], str), body
        return {"message": first["message"], "param": first["parameter"]}
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error["message"], str) and isinstance(error["type"], str), body
    return {"message": error["message"], "param": error["param"]}


def assert_no_leak(response: httpx.Response) -> None:
    text = response.text
    for word in LEAKS:
        assert word not in text, f"{word!r} leaked: {text[:500]}"
