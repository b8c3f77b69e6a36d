"""A lean keep-alive HTTP/1.1 client for upstream calls: asyncio protocols and httptools' parser.

Why not aiohttp here: every proxied request makes one upstream call whose answer is a stream of
small SSE events, and aiohttp's general machinery (its stream reader, per-chunk callbacks and
flow-control wakeups, request and response objects, cookie and redirect handling) was about a
third of a bare gateway's CPU per request (docs/benchmarks.md, "Issue 24"). This client does only
what the upstream path needs: POST a body, read status and headers, then the body whole or as
lines split in C (``bytes.split``) as they arrive, over pooled keep-alive connections, with TLS
from asyncio. httptools (the parser uvicorn uses, already a dependency) does the HTTP framing:
content length, chunked encoding, keep-alive.

Failures are builtin exceptions the backends already map (``upstream.mapped_errors``): a refused
or dropped connection is a ``ConnectionError`` (or an ``OSError`` for a name that does not
resolve), a malformed answer an ``UpstreamProtocolError`` (a ``ConnectionError`` too), a silence
or a deadline a ``TimeoutError``.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast
from urllib.parse import urlsplit

import httptools

# A connection idle longer than this is not reused, unless the pool says otherwise. Servers close
# idle ones after 5–75 s, the ones in front of self-hosted models soonest: uvicorn (vLLM, SGLang,
# LiteLLM's proxy), llama.cpp's server and Node all at 5 s. Reusing one just as its server closes it
# loses the request (retried, see ``RETRY_WINDOW``); under 5 s that race cannot happen with them.
KEEPALIVE_SECONDS = 4.0
# A request that went out on a kept connection and met its close with no byte of answer is sent
# again on a new one only if the close came this soon after the request was written: that is the
# server closing the idle connection as the request crossed it (the request never reached it). A
# close later than that may be a server that took the request and died: the router's retry policy
# (the deployment's max_retries) decides about it, not a hidden second attempt.
RETRY_WINDOW = 1.0
# Reading pauses while this much of an answer waits unread (a caller reading slower than it comes).
HIGH_WATER = 1 << 20
# An answer read to its end by the caller whose last bytes (a chunked body's terminator) have not
# come yet is read to its end for at most this long, and this much, so the connection is reused.
DRAIN_SECONDS = 1.0
DRAIN_BYTES = 1 << 16
# One line (an SSE event) may be longer than HIGH_WATER, up to this; a longer one fails the answer
# (a hostile or broken upstream sending bytes without a line break would otherwise fill memory).
MAX_LINE = 16 << 20
# An answer's status line and headers may be this long at most (httptools sets no limit).
MAX_HEAD = 1 << 16
# An answer read whole (``Response.read``: an error's body, an embeddings answer) may be this long at
# most unless the pool says otherwise: an upstream sending a body without end would fill memory.
# Large enough for OpenAI's largest embeddings answer (2048 inputs of 3072 floats as JSON, ~120 MiB).
MAX_BODY = 128 << 20

_DECODERS = {b"gzip": 16 + zlib.MAX_WBITS, b"x-gzip": 16 + zlib.MAX_WBITS, b"deflate": zlib.MAX_WBITS}


class UpstreamProtocolError(ConnectionError):
    """The upstream's answer was not valid HTTP/1.1, or the connection ended in the middle of it."""


class AnswerTooLarge(UpstreamProtocolError):
    """An answer read whole was longer than the pool allows (``max_body``); its connection is closed."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time. The parser's callbacks fill ``lines`` (or
    ``body``) and wake the reader, which waits on ``_waiter`` only when nothing is buffered."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.target: tuple[str, int, bool] = ("", 0, False)
        self.draining = False
        self._drain_timer: asyncio.TimerHandle | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.received = False  # any byte of this answer came
        self.head_bytes = 0
        self.headers: dict[str, str] = {}
        self.headers_done = False
        self.interim = False  # reading a 1xx answer, skipped (the final one follows)
        self.keep_alive = False
        self.complete = False
        self.error: BaseException | None = None
        self.lines: deque[bytes] = deque()
        self.pending = b""  # the part of a line not ended yet
        self.body: list[bytes] = []
        self.buffered = 0
        self._decoder: Any = None

    # -- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.received = True
        if not self.headers_done:
            self.head_bytes += len(data)
            if self.head_bytes > MAX_HEAD + len(data):  # this read may end the head and begin the body
                self._fail(UpstreamProtocolError(f"the upstream's headers are longer than {MAX_HEAD} bytes"))
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # pragma: no cover - never asked for
            self._fail(UpstreamProtocolError("unexpected protocol upgrade"))
        except httptools.HttpParserError as error:
            self._fail(UpstreamProtocolError(f"malformed HTTP answer: {error}"))

    def eof_received(self) -> bool | None:
        return None  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if exc is None and self.headers_done and not self.complete and self._ends_at_close():
            self.on_message_complete()  # an answer without a length ends where the connection does
        if not self.complete:
            self._fail(exc or UpstreamProtocolError("the upstream closed the connection before the answer ended"))

    def pause_writing(self) -> None:  # pragma: no cover - request bodies are small
        pass

    def resume_writing(self) -> None:  # pragma: no cover
        pass

    def _ends_at_close(self) -> bool:
        chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        return not chunked and "content-length" not in self.headers

    # -- httptools callbacks ------------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self.headers.get(key)
        self.headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if 100 <= self.status < 200:  # informational (100 Continue, 103 Early Hints): not the answer
            self.interim = True
            self.headers = {}
            return
        self.keep_alive = self.parser.should_keep_alive()  # read now: the parser forgets at the end
        self.headers_done = True
        encoding = self.headers.get("content-encoding", "").strip().lower().encode()
        if encoding in _DECODERS:  # only when a server compresses unasked (none is asked for)
            self._decoder = zlib.decompressobj(_DECODERS[encoding])
        self._wake()

    def on_body(self, data: bytes) -> None:
        if self._decoder is not None:
            data = self._decoder.decompress(data)
        self.body.append(data)  # split into lines by the reader, once per batch that arrived
        self.buffered += len(data)
        if self.draining:
            self.body.clear()
            if self.buffered > DRAIN_BYTES:
                self.close()
            return
        if self.buffered > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        decoder, self._decoder = self._decoder, None
        if decoder is not None:
            self.on_body(decoder.flush())
        self.complete = True
        if self.draining:
            self.draining = False
            self.release()
            return
        self._wake()

    def split(self) -> None:
        """Move what arrived into ``lines``: whole lines only, the rest waits in ``pending``."""
        body = self.body
        data = body[0] if len(body) == 1 else b"".join(body)
        body.clear()
        if self.pending:
            data = self.pending + data
        parts = data.split(b"\n")
        self.pending = parts.pop()
        self.lines.extend(parts)

    # -- the reader's side --------------------------------------------------------------------------

    def _fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self, silence: float | None) -> None:
        """Until the parser has more (or the connection failed); ``silence``: the longest wait."""
        if self.error is not None:
            raise self.error
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(silence, _time_out, waiter) if silence is not None else None
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()
            self._waiter = None
        if self.error is not None:
            raise self.error

    def consumed(self) -> None:
        self.buffered = 0
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    def send(self, head: bytes, body: bytes) -> None:
        assert self.transport is not None
        self._reset()
        self.transport.write(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            self.transport.write(body)

    def release(self, drain: bool = False) -> None:
        """Back to the pool when the answer ended whole and the server keeps the connection.
        ``drain``: the caller read all it wanted of an answer whose end has not arrived yet (an SSE
        stream's ``[DONE]`` before the chunked terminator): the rest is read and dropped briefly."""
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None
        if self.complete and not self.closed and self.error is None and self.keep_alive:
            self.idle_since = time.monotonic()
            self.pool.idle.setdefault(self.target, []).append(self)
        elif drain and self.headers_done and not self.closed and self.error is None and self.keep_alive:
            self.draining = True
            self.body.clear()
            self.lines.clear()
            self.buffered = 0
            self.consumed()
            self._drain_timer = asyncio.get_running_loop().call_later(DRAIN_SECONDS, self.close)
        else:
            self.close()

    def close(self) -> None:
        self.draining = False
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _time_out(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError("no data from the upstream in time"))


class Response:
    """An upstream answer being received: status and headers now, the body whole or as lines."""

    __slots__ = ("_connection", "_read_timeout", "headers", "status")

    def __init__(self, connection: _Connection, read_timeout: float | None) -> None:
        self._connection = connection
        self._read_timeout = read_timeout
        self.status = connection.status
        self.headers: Mapping[str, str] = connection.headers

    async def read(self) -> bytes:
        connection = self._connection
        limit = connection.pool.max_body
        declared = connection.headers.get("content-length", "")
        size = int(declared) if declared.isdigit() and int(declared) > limit else 0  # refused before it comes
        while True:
            size += connection.buffered  # what came since the last look (as decompressed)
            connection.consumed()
            if size > limit:
                connection.close()  # never back to the pool: the rest of the answer is still coming
                raise AnswerTooLarge(f"the upstream's answer is longer than {limit} bytes")
            if connection.complete:
                break
            await connection.wait(self._read_timeout)
        data = b"".join(connection.body)
        connection.body.clear()
        return data

    async def line_batches(self, limit: int | None = None) -> AsyncIterator[deque[bytes]]:
        """The body's lines (``\\n`` removed; a ``\\r`` before it kept) in the batches they arrived
        in; the caller empties each batch before asking for the next. ``limit``: the most bytes
        the whole body may have (a caller that keeps it all), else ``AnswerTooLarge``."""
        connection = self._connection
        lines = connection.lines
        taken = 0

        def took() -> None:
            nonlocal taken
            taken += connection.buffered  # what came since the last look (as decompressed)
            connection.consumed()
            if limit is not None and taken > limit:
                connection.close()  # never back to the pool: the rest of the answer is still coming
                raise AnswerTooLarge(f"the upstream's answer is longer than {limit} bytes")

        while True:
            if connection.body:
                connection.split()
            if lines:
                yield lines
                took()
                continue
            if len(connection.pending) > MAX_LINE:
                raise UpstreamProtocolError(f"an answer's line is longer than {MAX_LINE} bytes")
            took()  # only part of a line came: read on even past HIGH_WATER
            if connection.complete:
                if connection.pending:
                    lines.append(connection.pending)
                    connection.pending = b""
                    yield lines
                return
            await connection.wait(self._read_timeout)

    async def lines(self) -> AsyncIterator[str]:
        async for batch in self.line_batches():
            while batch:
                yield batch.popleft().rstrip(b"\r").decode()


class Pool:
    """Keep-alive connections to the origins one gateway calls (per event loop; see ``upstream``).

    ``request`` sends one POST and returns once status and headers are in; the caller reads the
    body and then ``finish``es the response, which puts the connection back for the next request
    when the answer was read whole, or closes it (an answer abandoned in the middle)."""

    def __init__(
        self,
        connect_timeout: float,
        tls: ssl.SSLContext | None = None,
        max_body: int = MAX_BODY,
        keepalive: float = KEEPALIVE_SECONDS,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.tls = tls
        self.max_body = max_body
        self.keepalive = keepalive
        self.idle: dict[tuple[str, int, bool], list[_Connection]] = {}
        self._targets: dict[str, tuple[str, int, bool, bytes]] = {}
        self._heads: dict[int, tuple[Mapping[str, str], bytes]] = {}
        self._closed = False

    def _target(self, url: str) -> tuple[str, int, bool, bytes]:
        """(host, port, TLS, the request line and Host header) of a URL, parsed once."""
        found = self._targets.get(url)
        if found is None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"not an http(s) URL: {url!r}")
            tls = parts.scheme == "https"
            port = parts.port or (443 if tls else 80)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            default = port == (443 if tls else 80)
            host_header = parts.hostname if default else f"{parts.hostname}:{port}"
            if ":" in parts.hostname and not parts.hostname.startswith("["):
                host_header = f"[{parts.hostname}]" if default else f"[{parts.hostname}]:{port}"
            line = f"POST {path} HTTP/1.1\r\nhost: {host_header}\r\n".encode("latin-1")
            found = self._targets[url] = (parts.hostname, port, tls, line)
        return found

    def _header_block(self, headers: Mapping[str, str]) -> bytes:
        cached = self._heads.get(id(headers))
        if cached is not None and cached[0] is headers:
            return cached[1]
        block = b""
        for name, value in headers.items():
            if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
                raise ValueError(f"a header may not contain a line break: {name!r}")
            block += f"{name}: {value}\r\n".encode("latin-1")
        if len(self._heads) > 64:
            self._heads.clear()
        self._heads[id(headers)] = (headers, block)  # the backend's dict: the same on every request
        return block

    async def _connect(self, host: str, port: int, tls: bool) -> _Connection:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.connect_timeout):
            _, protocol = await loop.create_connection(
                lambda: _Connection(self),
                host,
                port,
                ssl=(self.tls or ssl.create_default_context()) if tls else None,
                server_hostname=host if tls else None,
            )
        return protocol

    def _reuse(self, target: tuple[str, int, bool]) -> _Connection | None:
        idle = self.idle.get(target)
        now = time.monotonic()
        while idle:
            connection = idle.pop()  # the most recently used first: the warmest
            if not connection.closed and now - connection.idle_since <= self.keepalive:
                return connection
            connection.close()
        return None

    async def request(self, url: str, body: bytes, headers: Mapping[str, str], read_timeout: float | None) -> Response:
        if self._closed:
            raise ConnectionError("the upstream client is closed")
        host, port, tls, line = self._target(url)
        head = b"%s%scontent-length: %d\r\n\r\n" % (line, self._header_block(headers), len(body))
        target = (host, port, tls)
        connection = self._reuse(target)
        if connection is not None:
            sent = time.monotonic()
            try:
                return await self._send(connection, head, body, read_timeout)
            except ConnectionError:
                # A kept connection the server closed as the request went out (its close not read
                # yet) had no answer at all: the request never reached it, so it goes once more.
                if connection.received or time.monotonic() - sent > RETRY_WINDOW:
                    raise
        connection = await self._connect(host, port, tls)
        connection.target = target
        return await self._send(connection, head, body, read_timeout)

    @staticmethod
    async def _send(connection: _Connection, head: bytes, body: bytes, read_timeout: float | None) -> Response:
        try:
            connection.send(head, body)
            while not connection.headers_done:
                await connection.wait(read_timeout)
        except BaseException:
            connection.close()
            raise
        return Response(connection, read_timeout)

    @staticmethod
    def finish(response: Response, drain: bool = False) -> None:
        """Done with an answer; ``drain``: the caller ended normally (see ``_Connection.release``)."""
        response._connection.release(drain)

    async def close(self) -> None:
        self._closed = True
        idle, self.idle = self.idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()
