"""Checking the Responses API's wire against OpenAI's own OpenAPI spec: every Response object and
every stream event is validated with jsonschema on the spec's component schemas ($refs resolved),
and the stream's framing, order and sequence numbers are checked event by event."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from referencing import Registry, Resource

from tests.support.app import AppGateway
from tests.support.procs import Gateway
from tests.support.services import in_ci

ROOT = Path(__file__).resolve().parents[2]
SPEC_NAME = "reference/specs/openai-openapi.json"
# Where shared/ is: beside the checkout (CI), in it, or the team's machine.
SPEC_PLACES = [ROOT.parent / "shared", ROOT / "shared", Path("/work/shared")]

# Stream event type → its schema in the spec.
EVENT_SCHEMAS = {
    "response.created": "ResponseCreatedEvent",
    "response.in_progress": "ResponseInProgressEvent",
    "response.output_item.added": "ResponseOutputItemAddedEvent",
    "response.output_item.done": "ResponseOutputItemDoneEvent",
    "response.content_part.added": "ResponseContentPartAddedEvent",
    "response.content_part.done": "ResponseContentPartDoneEvent",
    "response.output_text.delta": "ResponseTextDeltaEvent",
    "response.output_text.done": "ResponseTextDoneEvent",
    "response.function_call_arguments.delta": "ResponseFunctionCallArgumentsDeltaEvent",
    "response.function_call_arguments.done": "ResponseFunctionCallArgumentsDoneEvent",
    "response.reasoning_text.delta": "ResponseReasoningTextDeltaEvent",
    "response.reasoning_text.done": "ResponseReasoningTextDoneEvent",
    "response.completed": "ResponseCompletedEvent",
    "response.incomplete": "ResponseIncompleteEvent",
    "response.failed": "ResponseFailedEvent",
}


def spec_path() -> Path:
    explicit = os.environ.get("GATEWRIGHT_OPENAI_SPEC")
    for place in [Path(explicit)] if explicit else [p / SPEC_NAME for p in SPEC_PLACES]:
        if place.is_file():
            return place
    message = f"OpenAI's OpenAPI spec (shared/{SPEC_NAME}) is not on this machine"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def _nullable(node: Any) -> Any:
    """OpenAPI 3.0's ``nullable: true`` as JSON Schema (parts of the spec still use it)."""
    if isinstance(node, list):
        return [_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _nullable(value) for key, value in node.items() if key != "nullable"}
    return {"anyOf": [out, {"type": "null"}]} if node.get("nullable") is True else out


@cache
def _registry(path: Path) -> Registry[Any]:
    spec = _nullable(json.loads(path.read_text()))
    return Registry().with_resource("spec", Resource.opaque(spec))


@cache
def validator(name: str) -> jsonschema.protocols.Validator:
    ref = {"$ref": f"spec#/components/schemas/{name}"}
    return jsonschema.Draft202012Validator(ref, registry=_registry(spec_path()))


def check(name: str, instance: Any) -> None:
    errors = sorted(validator(name).iter_errors(instance), key=lambda e: list(e.absolute_path))
    assert not errors, f"{name}: " + "; ".join(f"{list(e.absolute_path)}: {e.message[:300]}" for e in errors[:5])


def events(body: bytes) -> list[dict[str, Any]]:
    """Parse an SSE body, checking the framing: each frame is one ``event:`` line naming the type,
    then one ``data:`` line; sequence numbers count from 0 without gaps."""
    assert body.endswith(b"\n\n"), body[-200:]
    out: list[dict[str, Any]] = []
    for frame in body[:-2].split(b"\n\n"):
        lines = frame.split(b"\n")
        assert len(lines) == 2 and lines[0].startswith(b"event: ") and lines[1].startswith(b"data: "), frame
        payload = json.loads(lines[1][6:])
        assert payload["type"] == lines[0][7:].decode()
        assert payload["sequence_number"] == len(out), (payload, len(out))
        out.append(payload)
    return out


def check_stream(body: bytes) -> list[dict[str, Any]]:
    """Every event valid against its own schema and the ``ResponseStreamEvent`` union."""
    parsed = events(body)
    for event in parsed:
        check(EVENT_SCHEMAS[event["type"]], event)
        check("ResponseStreamEvent", event)
    return parsed


def kinds(parsed: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in parsed]


def post(gw: Gateway | AppGateway, body: Any, key: str | None = None, timeout: float = 300) -> httpx.Response:
    return gw.http.post(
        "/v1/responses",
        json=body,
        headers={"authorization": f"Bearer {key or gw.api_key}"},
        timeout=timeout,
    )


def get(gw: Gateway | AppGateway, path: str, key: str | None = None, **params: Any) -> httpx.Response:
    return gw.http.get(path, params=params, headers={"authorization": f"Bearer {key or gw.api_key}"})


def assert_error(response: httpx.Response, status: int, param: str | None = None, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
