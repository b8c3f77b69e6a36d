"""Bounded work before authentication (body limit), nothing internal in an answer (generic 500s
with the request id, credentials removed from relayed upstream errors), CORS off by default and on
every route when configured, and a key for /metrics."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from gatewright.backends import fake
from gatewright.core.errors import UpstreamError
from gatewright.core.events import TextDelta
from tests.hostile.conftest import InProcess, in_process
from tests.hostile.test_fuzz import DOC, _error_schema
from tests.hostile.wire import assert_no_leak
from tests.support.faulty_upstream import Fail, FaultyUpstream, running_faulty_upstream

LIMIT = 4096
BODY_ROUTES = sorted(
    (path, method) for path, item in DOC["paths"].items() for method, op in item.items() if "requestBody" in op
)
CHAT = {"model": "local", "messages": [{"role": "user", "content": "one two"}]}


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcess]:
    with in_process(tmp_path_factory.mktemp("limited"), max_body_bytes=LIMIT) as gw:
        yield gw


def _url(path: str) -> str:
    return path.replace("{prefix}", "00000000").replace("{response_id}", "resp_x")


# -- 4. bounded work before authentication ---------------------------------------------------------


@pytest.mark.parametrize(("path", "method"), BODY_ROUTES)
def test_a_body_over_the_limit_is_a_413_in_the_dialect_before_authentication(
    limited: InProcess, path: str, method: str
) -> None:
    operation = DOC["paths"][path][method]
    body = json.dumps({"model": "local", "pad": "x" * (LIMIT * 2)}).encode()
    response = limited.client.request(method.upper(), _url(path), content=body)  # no key at all
    assert response.status_code == 413, response.text
    jsonschema.validate(response.json(), _error_schema(operation["responses"]))


def test_a_chunked_body_is_not_read_past_the_limit(limited: InProcess) -> None:
    """No content-length (chunked): the limit is enforced on the bytes received."""

    def chunks() -> Iterator[bytes]:
        yield b'{"model": "local", "pad": "'
        for _ in range(1000):
            yield b"x" * 1024
        yield b'"}'

    headers = {**limited.headers(), "content-type": "application/json"}
    response = limited.client.post("/v1/tasks", content=chunks(), headers=headers)
    assert response.status_code == 413, response.text
    assert response.json()["errors"][0]["code"] == "payloadTooLarge"


def test_asgi_receive_stops_at_the_limit(limited: InProcess) -> None:
    """At the ASGI level: a stream of 1 KiB chunks is not pulled beyond the limit."""
    app = limited.client.app
    pulled = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b"x" * 1024, "more_body": pulled < 10_000}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/tasks",
        "raw_path": b"/v1/tasks",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
        "state": {},
    }
    limited.client.portal.call(app, scope, receive, send)  # type: ignore[union-attr,arg-type]
    assert sent[0]["status"] == 413
    assert pulled <= LIMIT // 1024 + 1


def test_a_body_under_the_limit_is_served(limited: InProcess) -> None:
    assert limited.client.post("/v1/chat/completions", json=CHAT, headers=limited.headers()).status_code == 200


# -- 5. nothing internal reaches a caller ----------------------------------------------------------

SECRETS = "RuntimeError at /srv/gatewright/core/ledger.py: SELECT * FROM api_keys WHERE key_hash='ab'"


@pytest.fixture
def bug(monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(self: Any, request: Any, ctx: Any) -> Any:
        raise RuntimeError(SECRETS)
        yield  # an async generator, as backends are

    monkeypatch.setattr(fake.FakeBackend, "stream", broken)


REQUESTS = [
    ("/v1/chat/completions", CHAT),
    ("/v1/chat/completions", {**CHAT, "stream": True}),
    ("/v1/messages", {**CHAT, "max_tokens": 8}),
    ("/v1/messages", {**CHAT, "max_tokens": 8, "stream": True}),
    ("/v1/responses", {"model": "local", "input": "one two"}),
]


@pytest.mark.parametrize(("path", "body"), REQUESTS)
def test_a_bug_answers_a_generic_message_with_the_request_id(
    gw: InProcess, bug: None, path: str, body: dict[str, Any]
) -> None:
    response = gw.client.post(path, json=body, headers=gw.headers())
    assert_no_leak(response)
    for word in ("RuntimeError", "SELECT", "/srv/", "api_keys", "ledger.py"):
        assert word not in response.text, response.text
    assert response.headers["x-request-id"] in response.text  # the id to quote when reporting it
    if not body.get("stream"):
        assert response.status_code == 500


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {**CHAT, "stream": True}),
        ("/v1/messages", {**CHAT, "max_tokens": 8, "stream": True}),
        ("/v1/responses", {"model": "local", "input": "one two", "stream": True}),
    ],
)
def test_a_bug_mid_stream_ends_the_stream_with_a_generic_error(
    gw: InProcess, monkeypatch: pytest.MonkeyPatch, path: str, body: dict[str, Any]
) -> None:
    """After the first byte, an unexpected exception is an error event, not a dropped connection."""

    async def breaks(self: Any, request: Any, ctx: Any) -> Any:
        yield TextDelta(0, "one")
        raise RuntimeError(SECRETS)

    monkeypatch.setattr(fake.FakeBackend, "stream", breaks)
    response = gw.client.post(path, json=body, headers=gw.headers())  # raises if the connection drops
    assert response.status_code == 200 and "one" in response.text
    assert "error" in response.text and response.headers["x-request-id"] in response.text
    assert "SELECT" not in response.text and "RuntimeError" not in response.text
    assert_no_leak(response)


def test_a_task_that_hits_a_bug_reports_it_generically(gw: InProcess, bug: None) -> None:
    task = {
        "taskType": "textInference",
        "taskUUID": "2b1e1a4c-7d0e-4c8e-9f3a-5d6b7c8d9e0f",
        "model": "local",
        "messages": [{"role": "user", "content": "hi"}],
    }
    response = gw.client.post("/v1/tasks", json=[task], headers=gw.headers())
    assert response.status_code == 500
    assert_no_leak(response)
    assert "SELECT" not in response.text and "RuntimeError" not in response.text


UPSTREAM_KEY = "sk-proj-4f9Qx2LmN8vB7cZ1aS3dF5gH"


@pytest.fixture(scope="module")
def faulty() -> Iterator[FaultyUpstream]:
    with running_faulty_upstream() as server:
        yield server


@pytest.fixture
def relayed(tmp_path: Path, faulty: FaultyUpstream) -> Iterator[InProcess]:
    catalog = "".join(
        f"""
[[models]]
id = "{route}"
context_window = 4096
max_output = 64
prices = {{ input = 1.0, output = 2.0 }}
backend = "openai"
base_url = "{faulty.base_url(route)}"
upstream_model = "m"
max_retries = 0
"""
        for route in ("leaks-401", "leaks-400")
    )
    with in_process(tmp_path, extra_catalog=catalog) as gw:
        yield gw


@pytest.mark.parametrize(("route", "status"), [("leaks-401", 401), ("leaks-400", 400)])
def test_an_upstream_error_is_relayed_without_credentials(
    relayed: InProcess, faulty: FaultyUpstream, route: str, status: int
) -> None:
    message = f"Incorrect API key provided: {UPSTREAM_KEY}. Authorization: Bearer {UPSTREAM_KEY} rejected"
    faulty.script(route, Fail(status, message), default=Fail(status, message))
    response = relayed.client.post("/v1/chat/completions", json={**CHAT, "model": route}, headers=relayed.headers())
    assert response.status_code >= 400
    text = response.json()["error"]["message"]
    assert UPSTREAM_KEY not in response.text and "Incorrect API key provided" in text and "[redacted]" in text


def test_a_mid_stream_upstream_error_is_relayed_without_credentials(
    gw: InProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def fails(self: Any, request: Any, ctx: Any) -> Any:
        yield TextDelta(0, "one")
        raise UpstreamError(f"upstream answered 401: bad key {UPSTREAM_KEY}")

    monkeypatch.setattr(fake.FakeBackend, "stream", fails)
    response = gw.client.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=gw.headers())
    assert UPSTREAM_KEY not in response.text and "[redacted]" in response.text


# -- 7. cross-origin and exposure ------------------------------------------------------------------

ORIGIN = "https://app.example"


def _preflight(gw: InProcess, path: str, method: str, origin: str = ORIGIN) -> Any:
    headers = {
        "origin": origin,
        "access-control-request-method": method.upper(),
        "access-control-request-headers": "authorization, content-type",
    }
    return gw.client.options(_url(path), headers=headers)


def test_cors_is_off_by_default(gw: InProcess) -> None:
    for path, item in DOC["paths"].items():
        for method in item:
            assert "access-control-allow-origin" not in _preflight(gw, path, method).headers, path
    answer = gw.client.get("/v1/models", headers={"origin": ORIGIN})
    assert "access-control-allow-origin" not in answer.headers


def test_cors_when_configured_applies_to_every_route(tmp_path: Path) -> None:
    with in_process(tmp_path, cors_origins=ORIGIN, max_body_bytes=LIMIT) as gw:
        for path, item in DOC["paths"].items():
            for method in item:
                allowed = _preflight(gw, path, method)
                assert allowed.status_code == 200, (path, allowed.text)
                assert allowed.headers["access-control-allow-origin"] == ORIGIN, path
                assert "access-control-allow-origin" not in _preflight(gw, path, method, "https://evil.example").headers
        headers = {**gw.headers(), "origin": ORIGIN}
        answer = gw.client.post("/v1/chat/completions", json=CHAT, headers=headers)
        assert answer.headers["access-control-allow-origin"] == ORIGIN
        assert "x-request-id" in answer.headers["access-control-expose-headers"]
        refused = gw.client.post("/v1/messages", content=b"x" * (LIMIT + 1), headers=headers)
        assert refused.status_code == 413 and refused.headers["access-control-allow-origin"] == ORIGIN


def test_metrics_can_require_a_key(tmp_path: Path, gw: InProcess) -> None:
    assert gw.client.get("/metrics").status_code == 200  # open unless a key is set
    with in_process(tmp_path, metrics_key="m-3f9a8b7c6d5e") as keyed:
        refused = keyed.client.get("/metrics")
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        assert keyed.client.get("/metrics", headers={"authorization": "Bearer wrong"}).status_code == 401
        assert keyed.client.get("/metrics", headers={"authorization": "Bearer m-3f9a8b7c6d5e"}).status_code == 200
