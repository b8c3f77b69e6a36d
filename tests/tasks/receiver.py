"""A real webhook receiver on a loopback port: it records every POST and answers 500 to the first
``fail_first`` attempts of each delivery, then 200."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int
    at: float


@dataclass
class Receiver:
    url: str
    fail_first: int = 2
    posts: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, delivery: str) -> int:
        with self.lock:
            earlier = sum(1 for p in self.posts if p.headers.get("x-gatewright-delivery") == delivery)
        return 500 if earlier < self.fail_first else 200

    def successes(self) -> list[Received]:
        with self.lock:
            return [p for p in self.posts if p.answered == 200]

    def wait_for(self, successes: int, timeout: float = 60.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = self.successes()
            if len(done) >= successes:
                return done
            time.sleep(0.05)
        raise TimeoutError(f"{len(self.successes())} of {successes} webhooks arrived; posts: {self.posts}")


@contextmanager
def running_receiver(fail_first: int = 2) -> Iterator[Receiver]:
    receiver: Receiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            status = receiver.answer(headers.get("x-gatewright-delivery", ""))
            with receiver.lock:
                receiver.posts.append(Received(self.path, headers, body, status, time.monotonic()))
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver = Receiver(f"http://127.0.0.1:{server.server_address[1]}/hook?token=abc", fail_first)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
