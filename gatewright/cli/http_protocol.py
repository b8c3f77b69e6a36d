"""uvicorn's httptools protocol, with what one turn of the event loop writes to a connection sent in
one system call.

uvicorn writes a response's status line and headers as soon as the app sends
``http.response.start``, then each body message as it comes: a non-streaming answer is two socket
writes, and a stream one per event, although the app produced them one right after the other.
Each write is a system call and, on the other end, a wakeup. Here a connection's writes are
gathered while the code that makes them runs and go out together at the loop's next turn (as
Node's HTTP server corks a socket until its next tick), or at once when the response is complete:
the same bytes in the same order, fewer calls. A stream whose events arrive one at a time still
sends each as it comes; a burst of them (an upstream's read that held several) goes out as one
write. Measured in docs/benchmarks.md, "Whole answers, and one write a turn".
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CorkedTransport:
    """A transport whose writes wait, gathered, for the end of the loop's current turn. Everything
    but writing and closing is the wrapped transport's own."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def flush(self) -> None:
        pending = self._pending
        if not pending:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()  # a response's last bytes, then the close (uvicorn closes after its last write)
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CorkedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's protocol, unchanged but for a connection's writes (see the module)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Every write of this connection, the protocol's own (a 400, a 503) and each response's,
        # goes through the one wrapper, so bytes keep their order. Flow control keeps the real one.
        self.transport = CorkedTransport(transport, self.loop)  # type: ignore[assignment]

    def on_response_complete(self) -> None:
        # A whole response goes out now, not a turn later: nothing more of it can come to join it.
        self.transport.flush()  # type: ignore[attr-defined]
        super().on_response_complete()
