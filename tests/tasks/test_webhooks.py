"""Webhooks on a real loopback receiver that refuses the first two attempts of every delivery:
retries with backoff until a 2xx, one POST per result, HMAC-SHA256 signatures, attempts in getResponse."""

from __future__ import annotations

import hashlib
import hmac
import time

import orjson

from gatewright.outbound.webhooks import verify
from tests.support.app import AppGateway
from tests.tasks.conftest import WEBHOOK_SECRET, post, text_task
from tests.tasks.receiver import Receiver


def test_each_result_is_delivered_after_two_failures(fake_gateway: AppGateway, receiver: Receiver) -> None:
    task = text_task(deliveryMethod="async", numberResults=2, webhookURL=receiver.url, includeCost=True)
    assert post(fake_gateway, [task]).status_code == 200
    delivered = receiver.wait_for(2)
    by_index = {orjson.loads(p.body)["data"][0]["resultIndex"]: p for p in delivered}
    assert sorted(by_index) == [0, 1]
    # The receiver has answered; the gateway records that answer a moment later.
    deadline = time.monotonic() + 60
    while True:
        polled = post(fake_gateway, [{"taskType": "getResponse", "taskUUID": task["taskUUID"]}]).json()["data"]
        if all(p["webhook"]["state"] != "pending" for p in polled) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for index, post_ in by_index.items():
        attempts = [p for p in receiver.posts if p.headers["x-gatewright-delivery"] == f"{task['taskUUID']}:{index}"]
        assert [p.answered for p in attempts] == [500, 500, 200]
        assert [p.headers["x-gatewright-attempt"] for p in attempts] == ["1", "2", "3"]
        assert attempts[1].at - attempts[0].at >= 0.9 and attempts[2].at - attempts[1].at >= 1.9  # backoff
        assert all(p.path == "/hook?token=abc" for p in attempts)
        (item,) = orjson.loads(post_.body)["data"]
        state = polled[index].pop("webhook")
        assert item == polled[index] and item["text"] == "one two three"
        assert state["state"] == "delivered"
        assert [a["status"] for a in state["attempts"]] == [500, 500, 200]
        assert [a["attempt"] for a in state["attempts"]] == [1, 2, 3]


def test_signature_is_hmac_sha256_of_timestamp_and_body(fake_gateway: AppGateway, receiver: Receiver) -> None:
    receiver.fail_first = 0
    post(fake_gateway, [text_task(webhookURL=receiver.url)])
    (delivery,) = receiver.wait_for(1)
    timestamp, signature = delivery.headers["x-gatewright-timestamp"], delivery.headers["x-gatewright-signature"]
    expected = hmac.new(WEBHOOK_SECRET.encode(), timestamp.encode() + b"." + delivery.body, hashlib.sha256).hexdigest()
    assert signature == f"v1={expected}"
    assert verify(WEBHOOK_SECRET.encode(), timestamp, delivery.body, signature)
    assert not verify(WEBHOOK_SECRET.encode(), timestamp, delivery.body + b" ", signature)
    assert not verify(b"another secret", timestamp, delivery.body, signature)
    assert not verify(WEBHOOK_SECRET.encode(), str(int(timestamp) - 3600), delivery.body, signature)


def test_failed_result_is_delivered_as_an_error(fake_gateway: AppGateway, receiver: Receiver) -> None:
    receiver.fail_first = 0
    task = text_task(model="pricey", deliveryMethod="async", webhookURL=receiver.url)
    post(fake_gateway, [task])
    (delivery,) = receiver.wait_for(1)
    (error,) = orjson.loads(delivery.body)["errors"]
    assert (error["code"], error["taskUUID"], error["resultIndex"]) == ("insufficientCredits", task["taskUUID"], 0)
