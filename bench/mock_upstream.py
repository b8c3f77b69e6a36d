"""A mock OpenAI-compatible upstream: one fixed answer, as fast as Python can send it.

Only for benchmarks and fault tests. It is a raw asyncio protocol on uvloop with httptools' parser (no
framework), so a gateway in front of it is measured, not the mock. ``POST /v1/chat/completions``
answers with ``--tokens`` one-word tokens (fewer when ``max_tokens`` is smaller: ``finish_reason``
``length``); with ``"stream": true`` it sends one SSE chunk per token, a finish chunk, a usage chunk
when ``stream_options.include_usage`` is set, then ``[DONE]``, all in one write.

Fault injection, per request, by header (a catalog deployment's ``headers`` can set them):
``x-mock-status: 503`` answers that status with an OpenAI error body (``x-mock-retry-after`` adds
``retry-after``), ``x-mock-delay-ms`` waits before answering, ``x-mock-chunks`` overrides the number of
tokens, ``x-mock-fail-after: k`` streams k token chunks and then drops the connection.

    python -m bench.mock_upstream --port 9100 [--tokens 16] [--prompt-tokens 12]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
from dataclasses import dataclass
from typing import Any, cast

import httptools
import orjson

WORDS = ("Hello", "!", " How", " can", " I", " help", " you", " today", "?")
CREATED = 1_700_000_000
_ids = itertools.count()

REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed"}


@dataclass(frozen=True, slots=True)
class MockConfig:
    tokens: int = 16
    prompt_tokens: int = 12


def pieces(count: int) -> list[str]:
    return [WORDS[i % len(WORDS)] for i in range(count)]


def usage(prompt: int, completion: int) -> dict[str, Any]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion_body(model: str, count: int, finish: str, config: MockConfig) -> bytes:
    return orjson.dumps(
        {
            "id": f"chatcmpl-mock{next(_ids)}",
            "object": "chat.completion",
            "created": CREATED,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(pieces(count)), "refusal": None},
                    "logprobs": None,
                    "finish_reason": finish,
                }
            ],
            "usage": usage(config.prompt_tokens, count),
        }
    )


def sse_frames(model: str, count: int, finish: str, include_usage: bool, config: MockConfig) -> list[bytes]:
    base = {"id": f"chatcmpl-mock{next(_ids)}", "object": "chat.completion.chunk", "created": CREATED, "model": model}

    def chunk(delta: dict[str, Any], reason: str | None = None) -> bytes:
        body = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}]}
        if include_usage:
            body["usage"] = None
        return b"data: " + orjson.dumps(body) + b"\n\n"

    frames = [chunk({"role": "assistant", "content": ""})]
    frames += [chunk({"content": text}) for text in pieces(count)]
    frames.append(chunk({}, finish))
    if include_usage:
        frames.append(b"data: " + orjson.dumps({**base, "choices": [], "usage": usage(config.prompt_tokens, count)}))
        frames[-1] += b"\n\n"
    frames.append(b"data: [DONE]\n\n")
    return frames


def http_head(status: int, content_type: bytes, extra: bytes = b"", length: int | None = None) -> bytes:
    reason = REASONS.get(status, b"Error")
    size = b"transfer-encoding: chunked\r\n" if length is None else b"content-length: %d\r\n" % length
    return b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\n%s%s\r\n" % (status, reason, content_type, size, extra)


def error_body(status: int, message: str) -> bytes:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return orjson.dumps({"error": {"message": message, "type": kind, "param": None, "code": None}})


def chunked(frame: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(frame), frame)


class MockProtocol(asyncio.Protocol):
    """One connection: parse requests with httptools, answer each from the fixed script."""

    def __init__(self, config: MockConfig) -> None:
        self.config = config
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.body: list[bytes] = []
        self.headers: dict[bytes, bytes] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's class is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._send(400, error_body(400, "malformed HTTP request"), keep_alive=False)

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower.startswith(b"x-mock-"):
            self.headers[lower] = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        method, path = self.parser.get_method(), self.url.split(b"?", 1)[0]
        keep_alive = self.parser.should_keep_alive()
        body, headers = b"".join(self.body), self.headers
        self._reset()
        delay = float(headers.get(b"x-mock-delay-ms", b"0")) / 1000
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self._route, method, path, body, headers, keep_alive)
        else:
            self._route(method, path, body, headers, keep_alive)

    def _route(self, method: bytes, path: bytes, body: bytes, headers: dict[bytes, bytes], keep_alive: bool) -> None:
        if path in (b"/v1/chat/completions", b"/chat/completions"):
            if method != b"POST":
                self._send(405, error_body(405, "use POST"), keep_alive)
            else:
                self._chat(body, headers, keep_alive)
        elif path in (b"/health", b"/v1/models"):
            self._send(200, orjson.dumps({"object": "list", "data": [{"id": "mock", "object": "model"}]}), keep_alive)
        else:
            self._send(404, error_body(404, f"no route {path.decode(errors='replace')}"), keep_alive)

    def _chat(self, raw: bytes, headers: dict[bytes, bytes], keep_alive: bool) -> None:
        if b"x-mock-status" in headers:
            status = int(headers[b"x-mock-status"])
            extra = b"retry-after: %s\r\n" % headers[b"x-mock-retry-after"] if b"x-mock-retry-after" in headers else b""
            self._send(status, error_body(status, f"mock failure {status}"), keep_alive, extra)
            return
        try:
            request = orjson.loads(raw)
            model = str(request["model"])
            max_tokens = request.get("max_completion_tokens") or request.get("max_tokens")
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            self._send(400, error_body(400, "body must be a JSON object with a model"), keep_alive)
            return
        count = int(headers.get(b"x-mock-chunks", self.config.tokens))
        finish = "stop"
        if isinstance(max_tokens, int) and 0 < max_tokens < count:
            count, finish = max_tokens, "length"
        if not request.get("stream"):
            self._send(200, completion_body(model, count, finish, self.config), keep_alive)
            return
        include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        frames = sse_frames(model, count, finish, include_usage, self.config)
        fail_after = headers.get(b"x-mock-fail-after")
        out = [http_head(200, b"text/event-stream", b"cache-control: no-cache\r\n")]
        if fail_after is not None:
            out += [chunked(f) for f in frames[: 1 + int(fail_after)]]
            self._write(b"".join(out), keep_alive=False)
            return
        out += [chunked(f) for f in frames]
        out.append(b"0\r\n\r\n")
        self._write(b"".join(out), keep_alive)

    def _send(self, status: int, body: bytes, keep_alive: bool, extra: bytes = b"") -> None:
        self._write(http_head(status, b"application/json", extra, len(body)) + body, keep_alive)

    def _write(self, data: bytes, keep_alive: bool) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(data)
        if not keep_alive:
            transport.close()


async def serve(host: str, port: int, config: MockConfig) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: MockProtocol(config), host, port, backlog=4096, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"mock upstream listening on http://{host}:{port}", flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--tokens", type=int, default=16, help="tokens (= stream chunks) per answer")
    parser.add_argument("--prompt-tokens", type=int, default=12, help="prompt_tokens reported in usage")
    args = parser.parse_args(argv)
    import uvloop

    uvloop.run(serve(args.host, args.port, MockConfig(args.tokens, args.prompt_tokens)))


if __name__ == "__main__":
    main()
