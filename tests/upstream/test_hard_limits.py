"""Spend limits and balances are hard caps even when an upstream counts far more prompt tokens
than a characters-based estimate (CJK text: three UTF-8 bytes a character, up to a token each):
the hold bounds the prompt by its UTF-8 bytes, and a charge never exceeds its hold."""

from __future__ import annotations

import concurrent.futures
from typing import Any

import httpx

from gatewright.core.billing import MESSAGE_FRAMING, PROMPT_FRAMING
from tests.support.app import AppGateway
from tests.support.faulty_upstream import Answer, FaultyUpstream
from tests.upstream.conftest import Store

CJK = "漢字仮名交じり文" * 40  # 320 characters, 960 bytes: a 4-characters-a-token estimate says ~80
MAX_TOKENS = 8
IN_CREDITS, OUT_CREDITS = 2, 4  # the fault catalog's PRICES (1 and 2 USD a million tokens)


def _key(gw: AppGateway, threshold_usd: float | None) -> tuple[str, str]:
    body: dict[str, Any] = {"name": "hard-limit"}
    if threshold_usd is not None:
        body["limit"] = {"retention": "no_reset", "threshold": threshold_usd}
    made = gw.http.post("/v1/keys", json=body, headers={"authorization": f"Bearer {gw.management_key}"})
    assert made.status_code in (200, 201), made.text
    data = made.json()["data"]
    return data["key"], data["prefix"]


def _ask(gw: AppGateway, key: str, text: str) -> httpx.Response:
    body = {"model": "metered", "messages": [{"role": "user", "content": text}], "max_tokens": MAX_TOKENS}
    return gw.http.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"})


def _key_spent(store: Store, prefix: str) -> tuple[int, int]:
    store.settled()
    row = store._query("SELECT id, period_spent, period_reserved FROM api_keys WHERE prefix = ?", prefix)[0]
    # What the gateway's credit lease holds for the key is reserved too, but for no request any more.
    leased = store._query(
        "SELECT coalesce(sum(credits), 0) AS held FROM leases WHERE status = 'held' AND key_id = ?", row["id"]
    )[0]["held"]
    return int(row["period_spent"]), int(row["period_reserved"]) - int(leased)


def test_a_spend_limit_holds_when_the_upstream_counts_every_byte(
    fault_gateway: AppGateway, faulty: FaultyUpstream, fault_store: Store
) -> None:
    prompt_bytes = len(CJK.encode())
    # The upstream's tokenizer gives every byte a token: the worst a byte-level BPE can do.
    faulty.script("metered", default=Answer("one two three four five", prompt_tokens=prompt_bytes))
    per_request = prompt_bytes * IN_CREDITS + 5 * OUT_CREDITS
    limit_credits = 20_000
    key, prefix = _key(fault_gateway, limit_credits / 2_000_000)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: _ask(fault_gateway, key, CJK), range(16)))
    ok = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code == 402]
    assert len(ok) + len(refused) == 16, [a.text for a in answers if a.status_code not in (200, 402)]
    assert refused and all(a.json()["error"]["code"] == "key_limit_exceeded" for a in refused)
    # Each answer was charged its full price: the hold (bytes + framing) covered it.
    assert {a.json()["meta"]["usage"]["credits_used"] for a in ok} == {per_request}
    for answer in ok:
        record = fault_store.usage(answer.headers["x-request-id"])
        assert (record["input_tokens"], record["credits"]) == (prompt_bytes, per_request)
    spent, reserved = _key_spent(fault_store, prefix)
    assert reserved == 0 and spent == len(ok) * per_request
    assert spent <= limit_credits, f"the key spent {spent} credits past its limit of {limit_credits}"
    # Sequentially the limit admits exactly as many as fit a whole hold each.
    hold = (PROMPT_FRAMING + MESSAGE_FRAMING + prompt_bytes) * IN_CREDITS + MAX_TOKENS * OUT_CREDITS
    assert len(ok) <= (limit_credits - hold) // per_request + 1


def test_an_upstream_reporting_more_than_the_hold_is_charged_the_hold(
    fault_gateway: AppGateway, faulty: FaultyUpstream, fault_store: Store
) -> None:
    faulty.script("metered", Answer("short", prompt_tokens=1_000_000))
    key, prefix = _key(fault_gateway, 0.01)
    answer = _ask(fault_gateway, key, "hi")
    assert answer.status_code == 200, answer.text
    hold = (PROMPT_FRAMING + MESSAGE_FRAMING + len(b"hi")) * IN_CREDITS + MAX_TOKENS * OUT_CREDITS
    assert answer.json()["meta"]["usage"]["credits_used"] == hold  # what was charged, not the price
    record = fault_store.usage(answer.headers["x-request-id"])
    assert (record["input_tokens"], record["credits"]) == (1_000_000, hold)
    assert fault_store.charges(answer.headers["x-request-id"]) == [-hold]
    assert _key_spent(fault_store, prefix) == (hold, 0)
