"""A real `gatewright serve` keeps an idle connection open longer than HTTP clients keep theirs.

httpx, and so the official SDKs, reuse a pooled connection that has been idle for up to 5 s; uvicorn's
default closes one after 5 s. With both at 5 s a client can send on a connection at the moment the
server closes it and get a reset instead of an answer (seen as an occasional ``httpx.ReadError`` in
``test_concurrency``'s last read). The server's limit is ``GATEWRIGHT_KEEP_ALIVE_SECONDS``."""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterator

import pytest

from tests.support.app import FAKE_CATALOG
from tests.support.procs import Gateway, running_gateway

CLIENT_KEEPALIVE = 5.0  # httpx.Limits().keepalive_expiry


@pytest.fixture(scope="module")
def bare_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with running_gateway(tmp_path_factory.mktemp("keep-alive"), catalog=FAKE_CATALOG, args=["--bare"]) as gw:
        yield gw


def _get(connection: http.client.HTTPConnection) -> int:
    connection.request("GET", "/health")
    response = connection.getresponse()
    response.read()
    return response.status


def test_a_connection_idle_as_long_as_a_client_keeps_it_still_answers(bare_gateway: Gateway) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", bare_gateway.port, timeout=30)
    try:
        assert _get(connection) == 200
        first = connection.sock
        time.sleep(CLIENT_KEEPALIVE + 1.0)  # past the client's reuse limit: the server must still be there
        assert _get(connection) == 200  # a closed connection raises RemoteDisconnected here
        assert connection.sock is first, "the same connection served both requests"
    finally:
        connection.close()
