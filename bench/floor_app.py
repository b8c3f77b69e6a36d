"""The floor under any gateway on gatewright's server and upstream client: an ASGI app with no
gateway in it, served exactly as ``gatewright serve`` serves its app (uvicorn, uvloop, the corked
httptools protocol, no access log). Used by ``bench.floor``.

``FLOOR_MODE=echo`` reads the request's body and answers a fixed completion; ``relay`` sends a fixed
request through gatewright's keep-alive upstream client (``backends.http1.Pool``) to
``FLOOR_UPSTREAM`` and answers the upstream's body as it came. ``FLOOR_SPIN_US`` first spends that
many microseconds of CPU in a loop of plain Python, so the relay can be run at a gateway's own rate
(a process that sleeps between requests pays more in the kernel for each than one that never
does). ``GET /health`` answers at once.

    python -m bench.floor_app --port 9200
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
import uvicorn

from gatewright.backends.http1 import Pool
from gatewright.cli.http_protocol import CorkedHttpToolsProtocol

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

ANSWER = orjson.dumps(
    {
        "id": "chatcmpl-floor",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "mock",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello! How can I help you today?", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 16, "total_tokens": 28},
    }
)
UPSTREAM_BODY = orjson.dumps(
    {"model": "mock-upstream", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 16}
)
UPSTREAM_HEADERS = {"content-type": "application/json"}


class FloorApp:
    def __init__(self, mode: str, upstream: str, spin_us: int) -> None:
        if mode not in ("echo", "relay"):
            raise ValueError(f"FLOOR_MODE must be echo or relay, not {mode!r}")
        self.relay = mode == "relay"
        self.url = upstream.rstrip("/") + "/v1/chat/completions"
        self.spin = spin_us / 1e6
        self.pool: Pool | None = None  # made on the server's loop, at the first request

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan: nothing to start
        if scope["path"] == "/health":
            await self._answer(send, b'{"status":"ok"}')
            return
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        if self.spin:
            until = time.thread_time() + self.spin
            while time.thread_time() < until:
                pass
        if not self.relay:
            await self._answer(send, ANSWER)
            return
        if self.pool is None:
            self.pool = Pool(connect_timeout=5.0)
        response = await self.pool.request(self.url, UPSTREAM_BODY, UPSTREAM_HEADERS, 30.0)
        body = await response.read()
        Pool.finish(response)
        await self._answer(send, body, response.status)

    @staticmethod
    async def _answer(send: Send, body: bytes, status: int = 200) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def app_from_env() -> FloorApp:
    return FloorApp(
        os.environ.get("FLOOR_MODE", "echo"),
        os.environ.get("FLOOR_UPSTREAM", ""),
        int(os.environ.get("FLOOR_SPIN_US", "0")),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    # The server settings of `gatewright serve` (cli/serve.py), so only the app differs.
    uvicorn.run(
        app_from_env(),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http=CorkedHttpToolsProtocol,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )


if __name__ == "__main__":
    main()
