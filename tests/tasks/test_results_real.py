"""Raw HTTP on the real embedded model: one result, and four results that each have their own seed
(and so their own text), where result i is exactly what a one-result task with seed s+i gives."""

from __future__ import annotations

from typing import Any

from tests.conftest import MODEL
from tests.support.procs import Gateway
from tests.tasks.conftest import REAL_MODEL_TIMEOUT, new_uuid, post

# Full distribution (no top-k / top-p cut) over digits: four seeds give four different numbers.
RANDOM_NUMBER: dict[str, Any] = {
    "taskType": "textInference",
    "model": MODEL,
    "messages": [{"role": "user", "content": "Write a random 5-digit number."}],
    "settings": {"maxTokens": 5, "temperature": 1, "topP": 1, "topK": 0},
    "includeUsage": True,
    "includeCost": True,
}


def test_four_results_then_one(gateway: Gateway) -> None:
    four = {**RANDOM_NUMBER, "taskUUID": new_uuid(), "seed": 100, "numberResults": 4}
    response = post(gateway, [four], timeout=REAL_MODEL_TIMEOUT)
    assert response.status_code == 200, response.text
    items = response.json()["data"]
    assert [i["resultIndex"] for i in items] == [0, 1, 2, 3]
    assert [i["seed"] for i in items] == [100, 101, 102, 103]
    assert {i["taskUUID"] for i in items} == {four["taskUUID"]}
    assert len({i["text"] for i in items}) == 4, [i["text"] for i in items]
    for item in items:
        assert item["finishReason"] in ("stop", "length") and item["cost"] > 0
        assert 0 < item["usage"]["completionTokens"] <= 5

    one = {**RANDOM_NUMBER, "taskUUID": new_uuid(), "seed": 102}
    response = post(gateway, [one], timeout=REAL_MODEL_TIMEOUT)
    assert response.status_code == 200 and list(response.json()) == ["data"]
    (single,) = response.json()["data"]
    assert (single["resultIndex"], single["seed"]) == (0, 102)
    assert (single["text"], single["usage"]) == (items[2]["text"], items[2]["usage"])
