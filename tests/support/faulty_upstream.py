"""A small controllable HTTP server on loopback, for fault injection. Tests only.

Each route (the first path segment: ``http://127.0.0.1:PORT/<route>/v1``) answers requests with
the outcomes a test scripted for it, in order, then with its default outcome; every request is
recorded. Outcomes: an OpenAI-style answer (streamed when the request asks), an error status (with
``Retry-After``), a hang, a connection reset part-way through a stream, or recorded raw bytes.
It speaks just enough HTTP/1.1 (keep-alive, Content-Length bodies, chunked responses) for httpx.

It runs on its own event loop in a thread, so synchronous tests and a gateway process can both use
it; every wait is bounded, so it always stops by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

import orjson

MAX_HANG = 60.0  # no outcome keeps a connection longer than this
_ids = itertools.count()


@dataclass(frozen=True)
class Answer:
    """A successful chat completion; ``prompt_tokens=None`` reports no usage at all."""

    text: str = "Hello from the upstream"
    prompt_tokens: int | None = 11
    completion_tokens: int | None = None  # default: one per word
    delay: float = 0.0  # seconds before answering
    reasoning: str = ""

    def words(self) -> list[str]:
        parts = self.text.split(" ")
        return [p if i == 0 else " " + p for i, p in enumerate(parts)]


@dataclass(frozen=True)
class Fail:
    status: int = 500
    message: str = "the upstream failed"
    retry_after: str | None = None  # the header's value, as sent
    param: str | None = None
    code: str | None = None


@dataclass(frozen=True)
class Hang:
    """Accept the request and send nothing for ``seconds`` (then close)."""

    seconds: float = 30.0


@dataclass(frozen=True)
class Reset:
    """Stream ``after_chunks`` content chunks (0: headers and the role chunk only), then reset the TCP
    connection (RST), as a crashed upstream or a dropped network would."""

    after_chunks: int = 2


@dataclass(frozen=True)
class Raw:
    """Recorded bytes, sent as they are (in ``pieces`` writes when given, to cut lines apart)."""

    body: bytes
    _: KW_ONLY
    content_type: str = "application/json"
    status: int = 200
    pieces: int = 1


def sse(body: bytes, pieces: int = 1) -> Raw:
    """A recorded event stream."""
    return Raw(body, content_type="text/event-stream", pieces=pieces)


Outcome = Answer | Fail | Hang | Reset | Raw


@dataclass(frozen=True)
class Seen:
    """One request as the upstream received it."""

    at: float  # time.monotonic()
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class _Route:
    script: deque[Outcome] = field(default_factory=deque)
    default: Outcome = field(default_factory=Answer)
    seen: list[Seen] = field(default_factory=list)


REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests"}


class FaultyUpstream:
    def __init__(self) -> None:
        self._routes: dict[str, _Route] = {}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="faulty-upstream", daemon=True)
        self.port = 0

    # -- control, from the test's thread ------------------------------------------------------

    def start(self) -> FaultyUpstream:
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        self.port = started.result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def base_url(self, route: str) -> str:
        return f"http://127.0.0.1:{self.port}/{route}/v1"

    def script(self, route: str, *outcomes: Outcome, default: Outcome | None = None) -> None:
        """Answer the next requests to ``route`` with ``outcomes``, then with ``default``."""
        with self._lock:
            state = self._routes.setdefault(route, _Route())
            state.script = deque(outcomes)
            if default is not None:
                state.default = default

    def seen(self, route: str) -> list[Seen]:
        with self._lock:
            return list(self._routes.setdefault(route, _Route()).seen)

    def forget(self, route: str) -> None:
        with self._lock:
            self._routes.setdefault(route, _Route()).seen.clear()

    # -- the server, on its own loop ----------------------------------------------------------

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _next(self, route: str, seen: Seen) -> Outcome:
        with self._lock:
            state = self._routes.setdefault(route, _Route())
            state.seen.append(seen)
            return state.script.popleft() if state.script else state.default

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                route = request.path.strip("/").split("/", 1)[0]
                outcome = self._next(route, request)
                keep = await _respond(writer, request, outcome)
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return  # the peer went away, or the server is stopping
        finally:
            with contextlib.suppress(Exception):
                writer.close()


async def _read_request(reader: asyncio.StreamReader) -> Seen | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    raw = await reader.readexactly(int(headers.get("content-length", "0")))
    try:
        body = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        body = raw
    return Seen(time.monotonic(), method, path, headers, body)


def _head(status: int, content_type: str, extra: dict[str, str], length: int | None) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}", f"content-type: {content_type}"]
    lines.append(f"content-length: {length}" if length is not None else "transfer-encoding: chunked")
    lines += [f"{k}: {v}" for k, v in extra.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:  # SO_LINGER 0: close() sends RST instead of FIN
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _error_body(path: str, outcome: Fail) -> bytes:
    if path.endswith("/messages"):  # Anthropic's error shape
        kind = {429: "rate_limit_error", 529: "overloaded_error"}.get(outcome.status, "api_error")
        if outcome.status < 500 and outcome.status != 429:
            kind = "invalid_request_error"
        return orjson.dumps({"type": "error", "error": {"type": kind, "message": outcome.message}})
    error = {"message": outcome.message, "type": "upstream_test_error", "param": outcome.param, "code": outcome.code}
    return orjson.dumps({"error": error})


async def _respond(writer: asyncio.StreamWriter, request: Seen, outcome: Outcome) -> bool:
    """Send one response; False when the connection must not be reused."""
    if isinstance(outcome, Hang):
        await asyncio.sleep(min(outcome.seconds, MAX_HANG))
        return False
    if isinstance(outcome, Fail):
        body = _error_body(request.path, outcome)
        extra = {"retry-after": outcome.retry_after} if outcome.retry_after is not None else {}
        writer.write(_head(outcome.status, "application/json", extra, len(body)) + body)
        await writer.drain()
        return True
    if isinstance(outcome, Raw):
        size = max(1, -(-len(outcome.body) // outcome.pieces))
        writer.write(_head(outcome.status, outcome.content_type, {}, None))
        for start in range(0, len(outcome.body), size):
            writer.write(_chunk(outcome.body[start : start + size]))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True
    answer = outcome if isinstance(outcome, Answer) else Answer()
    if answer.delay:
        await asyncio.sleep(min(answer.delay, MAX_HANG))
    body = request.body if isinstance(request.body, dict) else {}
    model = str(body.get("model", "upstream-model"))
    if not body.get("stream"):
        if isinstance(outcome, Reset):
            _reset(writer)
            return False
        payload = orjson.dumps(completion(answer, model))
        writer.write(_head(200, "application/json", {}, len(payload)) + payload)
        await writer.drain()
        return True
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    writer.write(_head(200, "text/event-stream", {}, None))
    frames = stream_frames(answer, model, include_usage)
    for k, frame in enumerate(frames):
        if isinstance(outcome, Reset) and k >= outcome.after_chunks + 1:  # +1: the role chunk
            await writer.drain()
            _reset(writer)
            return False
        writer.write(_chunk(frame))
        await writer.drain()
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    return True


def _usage(answer: Answer) -> dict[str, int] | None:
    if answer.prompt_tokens is None:
        return None
    completion_tokens = answer.completion_tokens if answer.completion_tokens is not None else len(answer.words())
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": answer.prompt_tokens + completion_tokens,
    }


def completion(answer: Answer, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": answer.text}
    if answer.reasoning:
        message["reasoning_content"] = answer.reasoning
    data: dict[str, Any] = {
        "id": f"chatcmpl-upstream{next(_ids)}",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
    }
    usage = _usage(answer)
    if usage is not None:
        data["usage"] = usage
    return data


def stream_frames(answer: Answer, model: str, include_usage: bool) -> list[bytes]:
    base = {"id": f"chatcmpl-upstream{next(_ids)}", "object": "chat.completion.chunk", "created": 1, "model": model}

    def frame(delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    frames = [frame({"role": "assistant", "content": ""})]
    if answer.reasoning:
        frames.append(frame({"reasoning_content": answer.reasoning}))
    frames += [frame({"content": word}) for word in answer.words()]
    frames.append(frame({}, "stop"))
    usage = _usage(answer)
    if include_usage and usage is not None:
        frames.append(b"data: " + orjson.dumps({**base, "choices": [], "usage": usage}) + b"\n\n")
    frames.append(b"data: [DONE]\n\n")
    return frames


@contextlib.contextmanager
def running_faulty_upstream() -> Iterator[FaultyUpstream]:
    server = FaultyUpstream().start()
    try:
        yield server
    finally:
        server.stop()
