"""A key's rate limit on the task API: the result over the limit fails with ``rateLimitExceeded``
(HTTP 429 and ``retry-after`` when it is the whole answer), the others are unaffected."""

from __future__ import annotations

from pathlib import Path

from tests.support.app import app_gateway
from tests.tasks.conftest import post, text_task


def test_requests_over_the_limit_are_429(tmp_path: Path) -> None:
    with app_gateway(tmp_path, default_requests_per_minute=2) as gw:
        both = post(gw, [text_task(), text_task(numberResults=2)])  # three generations, two allowed
        refused = post(gw, [text_task()])
        ping = post(gw, [{"taskType": "ping", "ping": True}])  # no generation: not rate limited
    body = both.json()
    assert both.status_code == 200 and len(body["data"]) == 2
    (error,) = body["errors"]
    assert (error["code"], error["resultIndex"]) == ("rateLimitExceeded", error["resultIndex"])
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert [e["code"] for e in refused.json()["errors"]] == ["rateLimitExceeded"]
    assert ping.status_code == 200
