"""The embedded engine: a client that leaves mid-stream must free its slot (the engine stops
generating for it at its next step)."""

from __future__ import annotations

import json
import re
import time

import httpx

from tests.conftest import MODEL
from tests.support.procs import Gateway

# Greedy and long: thousands of tokens of numbers, minutes of generation even on a quiet machine
# (about 47 tokens/s at best on 2 cores), if it went on.
LONG = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "Count from 1 to 3000, one number per line, nothing else."}],
    "max_tokens": 6000,
    "temperature": 0,
    "stream": True,
}
ACTIVE = re.compile(rf'^gatewright_engine_active_sequences\{{deployment="{re.escape(MODEL)}"\}} (\S+)$', re.M)


def active_sequences(gateway: Gateway) -> float:
    found = ACTIVE.search(httpx.get(f"{gateway.url}/metrics", timeout=30).text)
    assert found is not None
    return float(found.group(1))


def test_a_client_that_leaves_mid_stream_frees_its_slot(gateway: Gateway) -> None:
    headers = {"authorization": f"Bearer {gateway.api_key}"}
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=LONG, headers=headers, timeout=120) as stream:
        contents = 0
        for line in stream.iter_lines():
            if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                contents += 1
                if contents == 5:
                    assert active_sequences(gateway) >= 1
                    break  # leave: the connection closes with the block
    assert contents == 5
    # Had the generation gone on, its slot would stay busy for minutes; freed, it is idle within a
    # step or two (seconds, even on a busy machine).
    deadline = time.monotonic() + 60
    while active_sequences(gateway) > 0:
        assert time.monotonic() < deadline, "the abandoned generation went on"
        time.sleep(0.5)
