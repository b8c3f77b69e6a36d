"""bench.floor measures what it says: the relay really goes through the upstream client to the
mock, the spin really spends CPU, and the summary's floor is the spun relay less its spin."""

from __future__ import annotations

import httpx

from bench import procs
from bench.floor import SPUN, start_floor, summarize
from bench.floor_app import ANSWER


def test_echo_answers_without_an_upstream_and_relay_answers_the_mocks_body(mock: procs.Service) -> None:
    echo = start_floor("echo", "http://127.0.0.1:9")  # nothing listens there: echo never calls it
    relay = start_floor("relay", mock.url)
    try:
        answered = httpx.post(f"{echo.url}/v1/chat/completions", json={"model": "x"}, timeout=10)
        assert answered.status_code == 200 and answered.content == ANSWER
        for _ in range(3):  # the second and third reuse the kept-alive upstream connection
            relayed = httpx.post(f"{relay.url}/v1/chat/completions", json={"model": "x"}, timeout=10)
            assert relayed.status_code == 200
            completion = relayed.json()
            assert completion["id"].startswith("chatcmpl-mock")  # the mock's own answer, not the echo's
            assert completion["usage"]["completion_tokens"] == 16
    finally:
        echo.stop()
        relay.stop()


def test_spin_spends_at_least_its_cpu_per_request() -> None:
    spun = start_floor("echo", "http://127.0.0.1:9", spin_us=20_000)  # echo: no upstream is called
    try:
        with httpx.Client(timeout=10) as client:
            client.post(f"{spun.url}/v1/chat/completions", json={})
            before = spun.cpu_seconds()
            for _ in range(10):
                assert client.post(f"{spun.url}/v1/chat/completions", json={}).status_code == 200
            spent = spun.cpu_seconds() - before
    finally:
        spun.stop()
    assert spent >= 10 * 0.020 * 0.9  # /proc counts in clock ticks: allow one tick's rounding each way


def test_summary_takes_the_spin_off_the_spun_relay() -> None:
    result = {
        "reps": 1,
        "duration": 4.0,
        "concurrency": 16,
        "spin_us": 150,
        "figures": {
            "echo": {"cpu_us": [20.0], "rps": [40000.0]},
            "relay": {"cpu_us": [40.0], "rps": [20000.0]},
            "bare": {"cpu_us": [190.0, 200.0, 210.0], "rps": [4000.0]},
            "bare, baseline": {"cpu_us": [300.0], "rps": [3000.0]},
            "platform": {"cpu_us": [330.0], "rps": [3000.0]},
            "platform, baseline": {"cpu_us": [440.0], "rps": [2000.0]},
            SPUN: {"cpu_us": [210.0], "rps": [4000.0]},
        },
    }
    text = summarize(result)
    assert "| bare | 4000 | 200.0 | 0.67× |" in text
    assert f"| {SPUN} (150 µs) | 4000 | 210.0 | 0.70× |" in text
    assert "floor at the bare gateway's rate (relay + spin, less the spin): 60.0 µs" in text
    assert "bare gateway's own work above it: 140.0 µs" in text
    assert "platform's own work above it: 270.0 µs" in text
    assert "| platform | 3000 | 330.0 | 0.75× |" in text  # the platform against the platform's baseline
    assert "half of the baseline's bare request: 150.0 µs, which leaves 90.0 µs" in text
    assert "half of the baseline's platform request: 220.0 µs, which leaves 160.0 µs" in text
