"""The embedded engine: a client that leaves mid-stream must free its slot."""

from __future__ import annotations

import json
import time

import httpx

from tests.conftest import MODEL
from tests.openai.test_wire_raw import post
from tests.support.procs import Gateway

# Greedy and long: about 1,500 tokens of numbers, well over a minute of generation on 2 cores.
LONG = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "Count from 1 to 3000, one number per line, nothing else."}],
    "max_tokens": 1500,
    "temperature": 0,
    "stream": True,
}


def test_a_client_that_leaves_mid_stream_frees_the_engine(gateway: Gateway) -> None:
    headers = {"authorization": f"Bearer {gateway.api_key}"}
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=LONG, headers=headers, timeout=120) as stream:
        contents = 0
        for line in stream.iter_lines():
            if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                contents += 1
                if contents == 5:
                    break  # leave: the connection closes with the block
    assert contents == 5
    # Had the generation gone on, this request would wait behind the rest of it (over a minute).
    started = time.monotonic()
    reply = post(gateway, {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
    waited = time.monotonic() - started
    assert reply.status_code == 200, reply.text
    assert waited < 30, f"the next request waited {waited:.0f} s: the abandoned generation went on"
