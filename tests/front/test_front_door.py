"""The one front door (``api/front.py``), in process: every route gets a request id, an access line
and metrics; an error nothing else answered (a bug, an unknown path, a middleware's refusal) is
answered in the dialect of the path it came in on; a middleware added once applies to every route."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import openai
import pytest
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from gatewright.core.errors import PermissionDenied
from tests.support.app import AppGateway, app_gateway

CHAT = {"model": "echo", "messages": [{"role": "user", "content": "one two"}]}
MESSAGES = {**CHAT, "max_tokens": 8}
TASKS = [{"taskType": "textInference", "taskUUID": "6f1c8a0e-3b0a-4c39-9a43-2f7a3f0a1b11", **CHAT}]


OPENAI_FIELDS = {"message", "type", "param", "code"}
# Where each dialect's error object keeps its message (and nothing else has that shape).
MESSAGE_OF: dict[str, Callable[[Any], str]] = {
    "openai": lambda body: (
        body["error"]["message"] if set(body["error"]) == {"message", "type", "param", "code"} else ""
    ),
    "anthropic": lambda body: body["error"]["message"] if body["type"] == "error" else "",
    "tasks": lambda body: body["errors"][0]["message"],
}


class RefuseFlagged:
    """A deployment's own middleware: refuses any request that carries ``x-refuse``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and any(name == b"x-refuse" for name, _ in scope["headers"]):
            raise PermissionDenied("Refused by the deployment's middleware.", code="refused")
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppGateway]:
    with app_gateway(tmp_path_factory.mktemp("front"), middleware=[Middleware(RefuseFlagged)]) as gateway:
        yield gateway


@pytest.fixture
def bug(gw: AppGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection: checking the caller's key raises a plain exception, as a bug would (every
    dialect checks the key first and answers only GatewrightErrors itself)."""

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals: /srv/keys.db")

    platform = gw.services.gateway.platform
    assert platform is not None
    monkeypatch.setattr(platform.authenticator, "authenticate", broken)


def internal(rid: str) -> str:
    """The one message a bug gets (``api/public.py``): the request id, nothing of the bug itself."""
    return (
        f"The server had an error while processing your request (request id {rid}). It is logged; retry, or report it."
    )


def _auth(gw: AppGateway) -> dict[str, str]:
    return {"authorization": f"Bearer {gw.api_key}"}


@pytest.mark.usefixtures("bug")
def test_a_bug_on_the_openai_route_is_openais_500(gw: AppGateway) -> None:
    with pytest.raises(openai.InternalServerError) as raised:
        gw.openai().chat.completions.create(**CHAT)  # type: ignore[call-overload]
    rid = raised.value.response.headers["x-request-id"]
    assert raised.value.status_code == 500 and rid.startswith("req_")
    assert raised.value.body == {"message": internal(rid), "type": "server_error", "param": None, "code": None}


@pytest.mark.usefixtures("bug")
def test_a_bug_on_the_anthropic_route_is_anthropics_500(gw: AppGateway) -> None:
    with pytest.raises(anthropic.InternalServerError) as raised:
        gw.anthropic().messages.create(**MESSAGES)  # type: ignore[call-overload]
    body = raised.value.body
    rid = raised.value.response.headers["x-request-id"]
    assert body == {"type": "error", "error": {"type": "api_error", "message": internal(rid)}, "request_id": rid}
    assert raised.value.request_id == rid  # Anthropic's own request-id header, the same id


@pytest.mark.usefixtures("bug")
@pytest.mark.parametrize("path", ["/v1", "/v1/tasks"])
def test_a_bug_on_the_task_route_is_the_task_apis_500(gw: AppGateway, path: str) -> None:
    response = gw.http.post(path, json=TASKS, headers=_auth(gw))
    assert response.status_code == 500
    (error,) = response.json()["errors"]
    assert error["code"] == "internalServerError" and "secret" not in error["message"]


def test_the_bug_is_logged_with_its_request_id(gw: AppGateway, bug: None, caplog: pytest.LogCaptureFixture) -> None:
    response = gw.http.post("/v1/chat/completions", json=CHAT, headers=_auth(gw))
    rid = response.headers["x-request-id"]
    (record,) = [r for r in caplog.records if rid in r.getMessage() and r.exc_info is not None]
    assert record.exc_info is not None and "secret internals" in str(record.exc_info[1])  # the whole bug, logged
    assert "POST /v1/chat/completions 500" in gw.log() and rid in gw.log()


@pytest.mark.parametrize(
    ("path", "dialect"),
    [
        ("/v1/chat/completions", "openai"),
        ("/v1/messages", "anthropic"),
        ("/v1/messages/count_tokens", "anthropic"),
        ("/v1", "tasks"),
        ("/v1/keys", "openai"),  # the key API speaks OpenAI's format
        ("/v1/no-such-path", "openai"),
    ],
)
def test_a_middleware_added_once_refuses_on_every_route_in_its_dialect(gw: AppGateway, path: str, dialect: str) -> None:
    response = gw.http.post(path, json={}, headers={**_auth(gw), "x-refuse": "1"})
    assert response.status_code == 403
    assert MESSAGE_OF[dialect](response.json()) == "Refused by the deployment's middleware."
    assert response.headers["x-request-id"] in gw.log()


@pytest.mark.parametrize(
    ("method", "path", "status", "kind"),
    [
        ("GET", "/v1/nothing-here", 404, "invalid_request_error"),
        ("GET", "/v1/messages/nothing-here", 404, "not_found_error"),
        ("GET", "/v1/messages", 405, "invalid_request_error"),
        ("GET", "/v1/chat/completions", 405, "invalid_request_error"),
    ],
)
def test_unknown_paths_and_methods_answer_in_the_dialect(
    gw: AppGateway, method: str, path: str, status: int, kind: str
) -> None:
    response = gw.http.request(method, path, headers=_auth(gw))
    assert response.status_code == status
    error = response.json()["error"]
    assert error["type"] == kind and path in error["message"]
    if status == 405:
        assert response.headers["allow"] == "POST"


def test_every_route_is_logged_and_counted_under_its_template(gw: AppGateway) -> None:
    before = _count(gw, "/v1/keys/{prefix}", 400) or 0.0
    fixed = gw.http.get("/v1/models", headers=_auth(gw))
    templated = gw.http.patch("/v1/keys/NOT-HEX", json={}, headers={"authorization": f"Bearer {gw.management_key}"})
    assert fixed.status_code == 200 and templated.status_code == 400
    for response in (fixed, templated):
        assert response.headers["x-request-id"] in gw.log()
    assert _count(gw, "/v1/keys/{prefix}", 400) == before + 1
    assert (_count(gw, "/v1/models", 200) or 0) >= 1


def _count(gw: AppGateway, route: str, status: int) -> float | None:
    for line in gw.http.get("/metrics").text.splitlines():
        if line.startswith(f'gatewright_requests_total{{route="{route}",status="{status}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_the_in_process_gateway_is_the_whole_application_billing_included(gw: AppGateway) -> None:
    # The in-process gateway is the real application: the store it bootstrapped bills the call.
    before = gw.http.get("/v1/billing/balance", headers=_auth(gw)).json()["balance"]
    done = gw.openai().chat.completions.create(**CHAT)  # type: ignore[call-overload]
    assert done.choices[0].message.content == "one two"
    after = gw.http.get("/v1/billing/balance", headers=_auth(gw)).json()["balance"]
    assert before - after == done.model_extra["meta"]["usage"]["credits_used"] > 0  # type: ignore[index]
