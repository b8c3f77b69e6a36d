"""A light closed-loop HTTP load generator that times the first body byte and the whole response.

wrk times whole responses only; streaming needs time-to-first-byte too. This client keeps
``--concurrency`` keep-alive connections (raw asyncio protocols on uvloop, httptools' parser), each
sending the same POST back to back for ``--duration`` seconds, and prints one JSON line: completed
requests, errors, requests/s, and p50/p90/p99 of TTFB (first body byte after the headers: the first SSE
frame) and of the total time, in milliseconds. A response counts as an error unless it is a 200 whose
body (when streamed) ends with ``data: [DONE]``.

    python -m bench.stream_load --url http://127.0.0.1:8000/v1/chat/completions --body body.json \\
        --concurrency 16 --duration 10 [--key API_KEY]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import httptools

from bench.stats import summary


@dataclass(slots=True)
class Tally:
    ttfb: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


class Connection(asyncio.Protocol):
    """One keep-alive connection; ``send`` resolves with (status, ttfb, total, saw_done)."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.pending: asyncio.Future[tuple[int, float, float, bool]] | None = None
        self.started = 0.0
        self.first = 0.0
        self.tail = b""
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.pending is not None and not self.pending.done():
            self.pending.set_exception(ConnectionError("connection closed mid-response"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            if self.pending is not None and not self.pending.done():
                self.pending.set_exception(error)

    def on_body(self, body: bytes) -> None:
        if not self.first:
            self.first = time.perf_counter()
        self.tail = (self.tail + body)[-32:]

    def on_message_complete(self) -> None:
        end = time.perf_counter()
        first = self.first or end
        result = (self.parser.get_status_code(), first - self.started, end - self.started, b"[DONE]" in self.tail)
        if self.pending is not None and not self.pending.done():
            self.pending.set_result(result)

    async def send(self, request: bytes) -> tuple[int, float, float, bool]:
        assert self.transport is not None
        self.pending = asyncio.get_running_loop().create_future()
        self.first, self.tail = 0.0, b""
        self.started = time.perf_counter()
        self.transport.write(request)
        return await self.pending


def build_request(url: str, body: bytes, key: str | None) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    head = (
        f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Accept: */*\r\n{auth}Content-Length: {len(body)}\r\n\r\n"
    )
    return host, port, head.encode() + body


async def worker(host: str, port: int, request: bytes, stream: bool, deadline: float, tally: Tally) -> None:
    loop = asyncio.get_running_loop()
    conn: Connection | None = None
    while time.perf_counter() < deadline:
        if conn is None or conn.transport is None or conn.transport.is_closing():
            try:
                _, conn = await loop.create_connection(Connection, host, port)
            except OSError:
                tally.error("connect")
                await asyncio.sleep(0.05)
                continue
        try:
            status, ttfb, total, done = await asyncio.wait_for(conn.send(request), timeout=60)
        except (ConnectionError, httptools.HttpParserError, TimeoutError):
            tally.error("read")
            conn = None
            continue
        if status != 200:
            tally.error(f"status {status}")
        elif stream and not done:
            tally.error("no [DONE]")
        elif time.perf_counter() <= deadline:
            tally.ttfb.append(ttfb)
            tally.total.append(total)
    if conn is not None and conn.transport is not None:
        conn.transport.close()


async def run(url: str, body: bytes, key: str | None, concurrency: int, duration: float) -> dict[str, Any]:
    host, port, request = build_request(url, body, key)
    stream = bool(json.loads(body).get("stream"))
    tally = Tally()
    started = time.perf_counter()
    deadline = started + duration
    await asyncio.gather(*(worker(host, port, request, stream, deadline, tally) for _ in range(concurrency)))
    elapsed = min(time.perf_counter(), deadline) - started
    return {
        "tool": "stream_load",
        "concurrency": concurrency,
        "duration_s": round(elapsed, 3),
        "requests": len(tally.total),
        "rps": len(tally.total) / elapsed if elapsed > 0 else 0.0,
        "errors": tally.errors,
        "ttfb_ms": summary([t * 1000 for t in tally.ttfb]),
        "total_ms": summary([t * 1000 for t in tally.total]),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--body", required=True, help="file with the JSON request body")
    parser.add_argument("--key", default=None, help="bearer token")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args(argv)
    import uvloop

    with open(args.body, "rb") as f:
        body = f.read()
    result = uvloop.run(run(args.url, body, args.key, args.concurrency, args.duration))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
