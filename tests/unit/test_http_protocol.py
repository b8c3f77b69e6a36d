"""The served connection's writes: gathered for one turn of the loop, in order, never after a close;
and uvicorn serving with it over a real socket (a stream, pipelined requests, a bad request)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn

from gatewright.cli.http_protocol import CorkedHttpToolsProtocol, CorkedTransport


class Recorder(asyncio.Transport):
    """What reached the socket: each write as one item."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "written after the close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1)}.get(name, default)


async def test_writes_of_one_turn_go_out_as_one_at_the_next() -> None:
    recorder = Recorder()
    corked = CorkedTransport(recorder, asyncio.get_running_loop())
    corked.write(b"HTTP/1.1 200 OK\r\n\r\n")
    corked.write(b"")
    corked.write(b"hello")
    assert recorder.writes == []  # nothing before the turn ends
    await asyncio.sleep(0)
    assert recorder.writes == [b"HTTP/1.1 200 OK\r\n\r\nhello"]
    corked.write(b"next turn")
    await asyncio.sleep(0)
    assert recorder.writes[1:] == [b"next turn"]
    assert corked.get_extra_info("peername") == ("127.0.0.1", 1)  # the rest is the transport's own


async def test_a_close_sends_what_waits_first_and_nothing_goes_after_it() -> None:
    recorder = Recorder()
    corked = CorkedTransport(recorder, asyncio.get_running_loop())
    corked.write(b"last bytes")
    corked.close()
    assert recorder.writes == [b"last bytes"] and recorder.closed and corked.is_closing()
    corked.write(b"too late")
    await asyncio.sleep(0)  # the scheduled flush finds the transport closed: dropped, not raised
    assert recorder.writes == [b"last bytes"]


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for k in range(3):
            await send({"type": "http.response.body", "body": b"part %d;" % k, "more_body": True})
            await asyncio.sleep(0.01)  # a later turn: sent on its own
        await send({"type": "http.response.body", "body": b"end", "more_body": False})
        return
    body = scope["path"].encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
async def server() -> AsyncIterator[int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(_app, host="127.0.0.1", port=port, http=CorkedHttpToolsProtocol, log_level="warning")
    served = uvicorn.Server(config)
    task = asyncio.create_task(served.serve())
    async with asyncio.timeout(10):
        while not served.started:  # noqa: ASYNC110 - uvicorn's server has a flag, no event to wait on
            await asyncio.sleep(0.01)
    yield port
    served.should_exit = True
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _exchange(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)  # until the server closes
    writer.close()
    return data


async def test_uvicorn_serves_a_stream_pipelined_requests_and_a_bad_one_in_order(server: int) -> None:
    get = b"GET %s HTTP/1.1\r\nhost: x\r\n\r\n"
    closing = b"GET %s HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    answer = await _exchange(server, get % b"/first" + get % b"/second" + closing % b"/third")
    bodies = [part.split(b"\r\n\r\n", 1)[1][:7] for part in answer.split(b"HTTP/1.1 200 OK")[1:]]
    assert bodies == [b"/first", b"/second", b"/third"]
    stream = await _exchange(server, closing % b"/stream")
    assert stream.startswith(b"HTTP/1.1 200 OK") and b"transfer-encoding: chunked" in stream
    assert stream.endswith(b"7\r\npart 0;\r\n7\r\npart 1;\r\n7\r\npart 2;\r\n3\r\nend\r\n0\r\n\r\n")
    bad = await _exchange(server, b"NOT HTTP AT ALL\r\n\r\n")
    assert bad.startswith(b"HTTP/1.1 400 Bad Request")
