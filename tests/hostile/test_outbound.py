"""No request reaches inside: a caller's webhookURL to an internal address is refused when the task
is submitted and again when a delivery connects (to the address that was checked, so DNS rebinding
cannot swap one in), redirects are not followed, and the task status shows no transport error text.

No test sends traffic off this machine: loopback forms run against a real loopback receiver (which
must see nothing); private, link-local and metadata ranges use a stubbed resolver and a transport
that records what would have been sent (it must be nothing)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gatewright.core.webhooks import Attempt
from gatewright.outbound.guard import AddressGuard
from gatewright.outbound.webhooks import Backoff, WebhookSender
from tests.hostile.conftest import InProcess, in_process
from tests.support.procs import free_port
from tests.tasks.receiver import Receiver, running_receiver

LOOPBACK_FORMS = ["127.0.0.1", "localhost", "[::1]", "127.1", "2130706433", "0x7f000001", "[::ffff:127.0.0.1]"]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver(fail_first=0) as r:
        yield r


def _task(url: str) -> dict[str, object]:
    return {
        "taskType": "textInference",
        "taskUUID": str(uuid.uuid4()),
        "deliveryMethod": "async",
        "webhookURL": url,
        "model": "local",
        "messages": [{"role": "user", "content": "hi"}],
    }


@pytest.mark.parametrize("host", LOOPBACK_FORMS)
def test_loopback_in_any_spelling_is_refused_at_submit(gw: InProcess, receiver: Receiver, host: str) -> None:
    port = receiver.url.split(":")[2].split("/")[0]
    response = gw.client.post("/v1/tasks", json=[_task(f"http://{host}:{port}/hook")], headers=gw.headers())
    assert response.status_code == 400, response.text
    (error,) = response.json()["errors"]
    assert (error["code"], error["parameter"]) == ("invalidWebhookURL", "webhookURL")
    assert "internal" in error["message"]
    assert receiver.posts == []


class Recording(httpx.AsyncBaseTransport):
    """Stands where the network would be: records each request, answers ``status``."""

    def __init__(self, status: int = 200, location: str | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.status = status
        self.location = location

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        headers = {"location": self.location} if self.location else {}
        return httpx.Response(self.status, headers=headers)


def stub(table: dict[str, list[str]]) -> tuple[list[str], object]:
    asked: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return table[host]

    return asked, resolve


async def _deliver(sender: WebhookSender, url: str) -> tuple[bool, list[Attempt]]:
    attempts: list[Attempt] = []

    async def record(attempt: Attempt) -> None:
        attempts.append(attempt)

    delivered = await sender.deliver(url, b"{}", "d1", record)
    await sender.close()
    return delivered, attempts


INTERNAL_NAMES = {
    "private.example": ["10.0.0.5"],
    "private16.example": ["192.168.1.20"],
    "cgnat.example": ["100.64.0.9"],
    "metadata.example": ["169.254.169.254"],
    "linklocal6.example": ["fe80::1"],
    "ula.example": ["fd00:ec2::254"],
    "mixed.example": ["93.184.216.34", "10.0.0.5"],  # one internal address is enough to refuse
}
INTERNAL_LITERALS = [
    "http://10.1.2.3/",
    "http://172.16.0.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/",
    "http://[fe80::1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 form of the metadata address
    "http://0.0.0.0/",
    "http://[::]/",
]


@pytest.mark.parametrize("url", [f"https://{name}/hook" for name in INTERNAL_NAMES] + INTERNAL_LITERALS)
def test_internal_addresses_are_refused_and_never_connected(url: str) -> None:
    transport = Recording()
    _, resolve = stub(INTERNAL_NAMES)
    guard = AddressGuard(resolver=resolve)  # type: ignore[arg-type]
    sender = WebhookSender(b"s", Backoff(max_attempts=3, base=0.0), guard=guard, transport=transport)
    assert asyncio.run(sender.refusal(url)) is not None  # refused at submit
    delivered, attempts = asyncio.run(_deliver(sender, url))  # and at connect
    assert not delivered and len(attempts) == 1  # no retries of a refusal
    assert attempts[0].status is None and (attempts[0].error or "").startswith("refused:")
    assert transport.requests == []


def test_dns_rebinding_cannot_swap_in_an_internal_address() -> None:
    """Public when the task is submitted, loopback when the delivery connects: refused, and the
    connection goes only ever to an address that was checked."""
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])

    async def rebinding(host: str, port: int) -> list[str]:
        return next(answers)

    transport = Recording()
    sender = WebhookSender(b"s", Backoff(max_attempts=1), guard=AddressGuard(resolver=rebinding), transport=transport)
    assert asyncio.run(sender.refusal("https://rebind.example/hook")) is None
    delivered, attempts = asyncio.run(_deliver(sender, "https://rebind.example/hook"))
    assert not delivered and (attempts[0].error or "").startswith("refused:")
    assert transport.requests == []


def test_delivery_connects_to_the_checked_address_with_the_name_in_host_and_sni() -> None:
    asked, resolve = stub({"hooks.example": ["93.184.216.34"]})
    transport = Recording()
    guard = AddressGuard(resolver=resolve)  # type: ignore[arg-type]
    sender = WebhookSender(b"s", Backoff(max_attempts=1), guard=guard, transport=transport)
    delivered, _ = asyncio.run(_deliver(sender, "https://user:pw@hooks.example:8443/h?x=1"))
    assert delivered and asked == ["hooks.example"]  # resolved once, for this connection
    (sent,) = transport.requests
    assert str(sent.url) == "https://93.184.216.34:8443/h?x=1"
    assert sent.headers["host"] == "hooks.example:8443"  # no userinfo forwarded
    assert sent.extensions["sni_hostname"] == "hooks.example"  # TLS verifies the name


def test_redirects_are_not_followed() -> None:
    _, resolve = stub({"hooks.example": ["93.184.216.34"]})
    transport = Recording(status=302, location="http://169.254.169.254/latest/meta-data/")
    guard = AddressGuard(resolver=resolve)  # type: ignore[arg-type]
    sender = WebhookSender(b"s", Backoff(max_attempts=1), guard=guard, transport=transport)
    delivered, attempts = asyncio.run(_deliver(sender, "http://hooks.example/h"))
    assert not delivered and attempts[0].status == 302 and len(transport.requests) == 1


def test_operator_allows_named_internal_receivers() -> None:
    _, resolve = stub({"hooks.internal": ["10.9.8.7"], "other.internal": ["10.1.2.3"]})
    guard = AddressGuard(["hooks.internal", "192.168.50.0/24"], resolver=resolve)  # type: ignore[arg-type]
    sender = WebhookSender(b"s", Backoff(max_attempts=1), guard=guard, transport=Recording())
    assert asyncio.run(sender.refusal("http://hooks.internal/h")) is None
    assert asyncio.run(sender.refusal("http://192.168.50.4/h")) is None
    assert asyncio.run(sender.refusal("http://other.internal/h")) is not None
    assert asyncio.run(sender.refusal("http://192.168.51.4/h")) is not None


def test_task_status_shows_no_transport_error_text(tmp_path: Path) -> None:
    """An allowed receiver that is down: the attempts say so without the exception's text, which
    would let a caller tell closed ports from filtered ones."""
    port = free_port()  # nothing listens there
    with in_process(tmp_path, outbound_allow="127.0.0.1") as gw:
        task = _task(f"http://127.0.0.1:{port}/hook")
        assert gw.client.post("/v1/tasks", json=[task], headers=gw.headers()).status_code == 200
        poll = [{"taskType": "getResponse", "taskUUID": task["taskUUID"]}]
        deadline = time.monotonic() + 60  # a bound for a loaded machine, not a speed check
        while True:
            item = gw.client.post("/v1/tasks", json=poll, headers=gw.headers()).json()["data"][0]
            if item.get("webhook", {}).get("attempts") or time.monotonic() > deadline:
                break
            asyncio.run(asyncio.sleep(0.05))
        (attempt, *_) = item["webhook"]["attempts"]
        assert attempt["status"] is None
        assert attempt["error"] == "could not connect, or the connection failed"
