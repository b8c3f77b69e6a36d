"""A gateway process stopped while async tasks are pending: the next process on the same store
finishes them, and the ledger shows every result charged at most once. Each test runs gateways of
its own on a fresh data directory."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import orjson

from gatewright.outbound.webhooks import verify
from tests.conftest import MODEL
from tests.support.app import FAKE_CATALOG
from tests.support.procs import Gateway, start_gateway
from tests.tasks.conftest import RECEIVER_ENV, post, text_task
from tests.tasks.receiver import running_receiver
from tests.tasks.store import charges_of, query, task_row, usage_of

STARTING_CREDITS = 20_000_000


def states(gw: Gateway, task_uuid: str) -> list[dict[str, Any]]:
    response = post(gw, [{"taskType": "getResponse", "taskUUID": task_uuid}])
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


def wait(gw: Gateway, uuids: list[str], ready: Any, timeout: float) -> dict[str, list[dict[str, Any]]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = {u: states(gw, u) for u in uuids}
        if ready(seen):
            return seen
        time.sleep(0.05)
    raise TimeoutError(f"tasks not ready in {timeout}s: {seen}")


def restarted(old: Gateway, **kwargs: Any) -> Gateway:
    gw = start_gateway(old.data_dir, **{"env": old.env, **kwargs})
    gw.api_key, gw.management_key = old.api_key, old.management_key  # shown on first start only
    return gw


def statuses(items: list[dict[str, Any]]) -> list[str]:
    return [i["status"] for i in items]


def assert_books_balance(data_dir: Path) -> None:
    (account,) = query(data_dir, "SELECT balance, reserved FROM accounts")
    charged = -sum(r["credits"] for r in query(data_dir, "SELECT credits FROM ledger WHERE kind = 'charge'"))
    assert account["reserved"] == 0 and account["balance"] == STARTING_CREDITS - charged
    assert query(data_dir, "SELECT * FROM holds WHERE status = 'held'") == []


def test_killed_process_resumes_pending_tasks_on_the_real_model(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path)
    try:
        # The engine serves one key's requests in order: the short task ends while the long one runs.
        short = text_task(model=MODEL, deliveryMethod="async", seed=1, settings={"maxTokens": 2})
        # 48 tokens: the long task must still run when the poll that saw the short one done asks again.
        long = text_task(model=MODEL, deliveryMethod="async", seed=2, settings={"maxTokens": 48, "temperature": 0})
        long["messages"] = [{"role": "user", "content": "Count from 1 to 100, separated by commas."}]
        assert post(gw, [short]).status_code == 200
        assert post(gw, [long]).status_code == 200
        uuids = [short["taskUUID"], long["taskUUID"]]
        wait(gw, uuids, lambda s: statuses(s[uuids[0]]) == ["success"], timeout=600)
        assert statuses(states(gw, uuids[1])) == ["processing"]
        gw.stop(signal.SIGKILL)  # a crash: no shutdown code runs
    finally:
        gw.stop()

    gw = restarted(gw)
    try:
        seen = wait(gw, uuids, lambda s: all(statuses(v) == ["success"] for v in s.values()), timeout=600)
    finally:
        gw.stop()
    assert seen[uuids[1]][0]["finishReason"] == "length" and seen[uuids[1]][0]["text"].startswith("1")
    assert task_row(tmp_path, uuids[0])["attempt"] == 1  # finished before the crash: not run again
    assert task_row(tmp_path, uuids[1])["attempt"] == 2
    # The crashed run's hold was released unbilled; the resumed run was billed once.
    long_key = uuids[1].lower()
    holds = {
        r["request_id"]: r["status"]
        for r in query(tmp_path, "SELECT * FROM holds WHERE request_id LIKE ?", f"task_{long_key}_%")
    }
    if holds:  # committed holds (credit leases off); with leases the crashed run died in its lease
        assert holds == {f"task_{long_key}_0_1": "released", f"task_{long_key}_0_2": "settled"}
    for task_uuid in uuids:
        assert len(charges_of(tmp_path, task_uuid)) == 1
        assert [u["status"] for u in usage_of(tmp_path, task_uuid)] == ["ok"]
    assert_books_balance(tmp_path)


def test_stopped_process_does_not_bill_a_result_twice(tmp_path: Path) -> None:
    """SIGTERM: the run being generated is closed unbilled (aborted, nothing charged: the task is
    not the client leaving); the next process runs that result again and bills that run once, and
    delivers its webhook signed with the secret in the data dir."""
    catalog = FAKE_CATALOG
    words = " ".join(f"w{i}" for i in range(20))  # 20 tokens at 0.2 s each
    with running_receiver(fail_first=0) as receiver:
        gw = start_gateway(tmp_path, catalog=catalog, env=RECEIVER_ENV)
        try:
            task = text_task(
                model="slow",
                deliveryMethod="async",
                numberResults=2,
                includeCost=True,
                webhookURL=receiver.url,
                messages=[{"role": "user", "content": words}],
            )
            post(gw, [task])
            time.sleep(1.5)  # both results are some tokens in
            assert statuses(states(gw, task["taskUUID"])) == ["processing", "processing"]
        finally:
            gw.stop(signal.SIGTERM)
        interrupted = usage_of(tmp_path, task["taskUUID"])
        assert {u["status"] for u in interrupted} == {"aborted"} and len(interrupted) == 2
        assert all(u["credits"] == 0 for u in interrupted)
        assert charges_of(tmp_path, task["taskUUID"]) == []

        gw = restarted(gw, catalog=catalog)
        try:
            seen = wait(gw, [task["taskUUID"]], lambda s: statuses(next(iter(s.values()))) == ["success"] * 2, 60)
            deliveries = receiver.wait_for(2)
        finally:
            gw.stop()
    items = seen[task["taskUUID"]]
    assert [i["text"] for i in items] == [words, words]
    charges = charges_of(tmp_path, task["taskUUID"])
    assert sorted(c["request_id"] for c in charges) == [f"task_{task['taskUUID']}_{i}_2" for i in (0, 1)]
    assert [(u["request_id"][-2:], u["status"], u["credits"] > 0) for u in usage_of(tmp_path, task["taskUUID"])] == [
        ("_1", "aborted", False),
        ("_2", "ok", True),
        ("_1", "aborted", False),
        ("_2", "ok", True),
    ]
    assert [i["cost"] for i in items] == [-c["credits"] / 2_000_000 for c in charges]
    assert_books_balance(tmp_path)

    secret = (tmp_path / "webhook_secret").read_text().strip().encode()
    for delivery in deliveries:
        headers = delivery.headers
        assert verify(secret, headers["x-gatewright-timestamp"], delivery.body, headers["x-gatewright-signature"])
        assert orjson.loads(delivery.body)["data"][0]["text"] == words


def test_webhook_deliveries_continue_after_a_restart(tmp_path: Path) -> None:
    catalog = FAKE_CATALOG
    with running_receiver(fail_first=1_000) as receiver:
        gw = start_gateway(tmp_path, catalog=catalog, env=RECEIVER_ENV)
        try:
            task = text_task(webhookURL=receiver.url)
            assert post(gw, [task]).status_code == 200
            deadline = time.monotonic() + 30
            while len(receiver.posts) < 2 and time.monotonic() < deadline:  # attempts at 0 s and 1 s
                time.sleep(0.05)
        finally:
            gw.stop(signal.SIGTERM)
        row = task_row(tmp_path, task["taskUUID"])
        assert (row["status"], row["webhook_pending"]) == ("success", 1)
        before = row["webhook_attempts"][0]["attempts"]
        assert len(before) >= 2 and {a["status"] for a in before} == {500}

        receiver.fail_first = 0
        gw = restarted(gw, catalog=catalog)
        try:
            (delivered,) = receiver.wait_for(1)
            (item,) = states(gw, task["taskUUID"])
        finally:
            gw.stop()
    assert delivered.headers["x-gatewright-attempt"] == str(len(before) + 1)
    assert item["webhook"]["state"] == "delivered"
    assert [a["attempt"] for a in item["webhook"]["attempts"]] == list(range(1, len(before) + 2))
    assert task_row(tmp_path, task["taskUUID"])["webhook_pending"] == 0
