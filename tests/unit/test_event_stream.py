"""``api.sse.EventStream`` closes its frames' generator before it returns, however the answer
ended: the generator's ``finally`` is what closes the upstream connection and settles the hold,
and left to the garbage collector it runs late (or, while anything references it, never)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gatewright.api.sse import EventStream


class Frames:
    """An endless stream of frames whose ``finally`` says when it ran."""

    def __init__(self) -> None:
        self.sent = 0
        self.closed = asyncio.Event()

    async def frames(self) -> AsyncIterator[bytes]:
        try:
            while True:
                self.sent += 1
                yield b"data: {}\n\n"
                await asyncio.sleep(0)
        finally:
            self.closed.set()


async def _never() -> dict[str, Any]:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def test_a_send_that_raises_closes_the_frames_at_once() -> None:
    source = Frames()
    frames = source.frames()  # referenced here: only an explicit close can run its `finally`

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            raise OSError("the client went away")  # what an ASGI 2.4 server's send does

    with pytest.raises(OSError, match="went away"):
        await EventStream(frames)({"type": "http"}, _never, send)
    assert source.closed.is_set()
    assert source.sent == 1


async def test_a_client_leaving_while_a_write_waits_closes_the_frames_at_once() -> None:
    source = Frames()
    frames = source.frames()
    writing = asyncio.Event()
    leave = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await leave.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            writing.set()
            await asyncio.Event().wait()  # a client that reads nothing: the write waits for room

    call = asyncio.ensure_future(EventStream(frames)({"type": "http"}, receive, send))
    await asyncio.wait_for(writing.wait(), 30)
    leave.set()
    await asyncio.wait_for(call, 30)  # the client's leaving ends the answer, not as an error
    assert source.closed.is_set()
    assert not call.cancelled()


async def test_an_answer_sent_whole_ends_its_frames() -> None:
    async def three() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b"data: {}\n\n"

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await EventStream(three())({"type": "http"}, _never, send)
    assert [m.get("more_body") for m in sent] == [None, True, True, True, False]
