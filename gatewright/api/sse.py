"""Server-sent-event framing and the streamed answer shared by the dialects; no dialect logic here."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send


def data_frame(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def event_frame(event: str, payload: Any) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


DONE = b"data: [DONE]\n\n"


class EventStream(Response):
    """A streamed ``text/event-stream`` answer, as Starlette's ``StreamingResponse`` but lighter.

    Starlette watches for the client leaving (ASGI 2.3, what uvicorn speaks) with an anyio task
    group per stream: a task, cancel scopes and their delivery machinery, about a tenth of a
    stream's CPU here (docs/benchmarks.md, "Issue 24"). This one runs the stream in the request's
    own task and watches ``receive`` from one plain task that cancels it when the client goes, so
    the frames stop being generated and the stream's own ``finally`` (settling) runs as before."""

    media_type = "text/event-stream"

    def __init__(self, frames: AsyncIterator[bytes], headers: Mapping[str, str] | None = None) -> None:
        self.body_iterator = frames
        self.status_code = 200
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        state = {"gone": False, "done": False}

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            if not state["done"]:
                state["gone"] = True
                task.cancel()

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for frame in self.body_iterator:
                await send({"type": "http.response.body", "body": frame, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not state["gone"]:
                raise  # cancelled from outside (shutdown): not ours to swallow
            # the client left: the stream was stopped on purpose, and the answer is over
        finally:
            state["done"] = True
            watcher.cancel()
            if state["gone"]:
                task.uncancel()  # our one cancel, however the stream took it
            # The frames' generator is closed here however the answer ended: it stops where the
            # client went, in `send` (a cancel while waiting to write, or an ASGI server's send
            # raising OSError) as often as in the generator, and then only the garbage collector
            # would close it, holding the upstream connection and the credit hold until then.
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                await close()
