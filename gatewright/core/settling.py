"""Closing a request's hold, shared by every pipeline (chat, embeddings): the settlement as the
ledger's one writer applies it, with its trace span, and the wait that makes a delivered answer's
charge durable (journaled or committed) before its last byte goes out."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from gatewright.core import tracing
from gatewright.core.billing import credits_to_usd
from gatewright.core.errors import GatewrightError
from gatewright.core.platform import Hold, Platform, Settlement, SettleStatus
from gatewright.core.types import Cost, Usage

log = logging.getLogger("gatewright.pipeline")  # the lines of the pipelines it serves


async def charge(
    platform: Platform,
    hold: Hold,
    usage: Usage,
    cost: Cost,
    model: str,
    dialect: str | None = None,
    started: float | None = None,
) -> Cost:
    """Settle a finished request and wait until the charge is durable (in the ledger's journal, or
    committed when it has none; ``core.ledger``): the answer's last byte (the
    usage event, ``[DONE]``, the JSON body) goes out only after it, so a crash at any instant never
    leaves an answer a client received unbilled. The cost the client is told is what is charged:
    at most the hold (an upstream that reports more is capped there, and the excess logged).

    One exception, chosen: when the store stays unreachable through the writer's retries (about a
    second), the answer ends anyway, reporting the price, with the charge not yet durable. It is
    kept in memory and written when the store is back (``LedgerWriter`` retries it every few
    seconds, and once more at a clean stop); only a process that dies before then loses it, and
    then its hold is released at the restart: that answer is free. Failing the answer instead
    would be worse for the caller: the generation is done and paid upstream, and a write whose
    failure is ambiguous (a commit whose acknowledgement was lost) may have charged it anyway, so
    the caller could pay for an answer it never got. So a store outage can cost the operator the
    answers of a process that crashes during it; it never bills a caller twice or for nothing."""
    if cost.credits > hold.credits:
        log.warning(
            "request %s: the upstream reported %d credits of usage, above its hold of %d; charged the hold",
            hold.request_id,
            cost.credits,
            hold.credits,
        )
    settlement = settle(platform, hold, usage, cost, "ok", model, dialect, started)
    try:
        charged = await asyncio.shield(settlement)
    except GatewrightError as error:
        # The store is unreachable: the ledger keeps retrying this settlement in the background;
        # not durable until then (see the docstring for why the answer ends all the same).
        log.error("settling %s failed for now (%s); reporting the price %d", hold.request_id, error, cost.credits)
        return cost
    return cost if charged == cost.credits else Cost(charged, credits_to_usd(charged))


def settle(
    platform: Platform,
    hold: Hold,
    usage: Usage,
    cost: Cost,
    status: SettleStatus,
    model: str,
    dialect: str | None = None,
    started: float | None = None,
) -> asyncio.Future[Any]:
    """``started``: the request's ``time.perf_counter()`` when the gateway took it; the usage
    record's latency is from then to now (the end of the answer, or of the attempt)."""
    latency_ms = None if started is None else round((time.perf_counter() - started) * 1000)
    committed = platform.ledger.settle(Settlement(hold, usage, cost, status, model, dialect, latency_ms))
    if tracing.ENABLED:  # a span from now until the settlement is committed, behind the response
        span = tracing.start_child(
            "gatewright.settle", {"gatewright.credits": cost.credits, "gatewright.outcome": status}
        )
        committed.add_done_callback(lambda _: span.end())
    return committed
