"""Money under chaos: real gateway processes in front of a fault-injecting upstream, traffic in
three dialects (OpenAI chat, Anthropic messages, tasks) with clients leaving mid-stream, keys with
spend limits, prompts whose real token counts are their UTF-8 bytes (CJK: about 12 times a
characters-based estimate), and SIGKILL of gateway processes at seeded moments, restarted on the
same store. Afterwards the books are read back and checked against what every client was told.

``check`` is pure: it takes the books (``Books``) and the clients' view (``Told``) and returns the
invariants that failed, so a test can show each check firing on deliberately broken books.
Used by ``tests/platform/test_chaos.py`` (bounded) and ``python -m bench.chaos`` (longer).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gatewright.core.ledger import LedgerWriter
from gatewright.store.ledger import SqlLedgerStore
from gatewright.store.tables import accounts, api_keys, holds, leases, ledger, usage_records
from tests.support.catalogs import catalog_toml
from tests.support.faulty_upstream import Answer, Fail, FaultyUpstream, Hang, Outcome, Raw, Reset, sse
from tests.support.procs import Gateway, start_gateway

CREDITS_PER_USD = 2_000_000
PROMPT = "請把這段文字翻譯成英文，並保留所有的數字 3.14159265358979 與代碼 x=[i*i for i in range(10)]。"
PROMPT_BYTES = len(PROMPT.encode())
MODEL = "chaos"
ROUTE = "chaos"
MAX_TOKENS = 16

Fate = Literal["answered", "failed", "cut"]


# -- what the clients saw -------------------------------------------------------------------------


@dataclass
class Told:
    """One request as its client saw it: answered whole (told ``credits``), failed (an error
    status or an in-stream error), or cut (the client left mid-stream, or the connection broke)."""

    request_ids: tuple[str, ...]  # a task's result may run several times: task_<uuid>_0_<run>
    kind: str
    fate: Fate
    credits: int = 0


# -- what the store holds -------------------------------------------------------------------------


@dataclass
class Books:
    start: int  # credits granted to the account in all
    balance: int
    reserved: int
    ledger_sum: int  # every ledger row of the account, signed
    min_balance_after: int
    charges: list[tuple[str, int]]  # (request_id, credits > 0) of each charge row
    usage: list[tuple[str, int, int, str]]  # (request_id, key_id, credits, status)
    holds: dict[str, str]  # request_id → held | settled | released
    keys: dict[int, tuple[int | None, int, int]]  # key_id → (threshold, period_spent, period_reserved)
    leases: dict[str, str] = field(default_factory=dict)  # credit lease id → held | returned | released


async def read_books(engine: AsyncEngine, account_id: int) -> Books:
    async with engine.connect() as conn:
        account = (await conn.execute(select(accounts).where(accounts.c.id == account_id))).one()
        rows = list(await conn.execute(select(ledger).where(ledger.c.account_id == account_id)))
        used = list(await conn.execute(select(usage_records).where(usage_records.c.account_id == account_id)))
        held = list(await conn.execute(select(holds).where(holds.c.account_id == account_id)))
        keys = list(await conn.execute(select(api_keys).where(api_keys.c.account_id == account_id)))
        leased = list(await conn.execute(select(leases).where(leases.c.account_id == account_id)))
    return Books(
        start=sum(r.credits for r in rows if r.kind == "grant"),
        balance=account.balance,
        reserved=account.reserved,
        ledger_sum=sum(r.credits for r in rows),
        min_balance_after=min((r.balance_after for r in rows), default=0),
        charges=[(r.request_id, -r.credits) for r in rows if r.kind == "charge"],
        usage=[(r.request_id, r.key_id, r.credits, r.status) for r in used],
        holds={r.request_id: r.status for r in held},
        keys={k.id: (k.limit_threshold, k.period_spent, k.period_reserved) for k in keys},
        leases={r.id: r.status for r in leased},
    )


async def release_stale(engine: AsyncEngine) -> int:
    """What the replicas do an hour after a process died: close its open holds, unbilled."""
    writer = LedgerWriter(SqlLedgerStore(engine, owner="chaos-audit"))
    await writer.start()
    try:
        return await writer.release_stale(None)
    finally:
        await writer.close()


# -- the invariants -------------------------------------------------------------------------------


def figures(books: Books, told: list[Told]) -> dict[str, int]:
    fates = Counter(t.fate for t in told)
    return {
        "requests": len(told),
        "answered": fates["answered"],
        "failed": fates["failed"],
        "cut": fates["cut"],
        "starting credits": books.start,
        "balance": books.balance,
        "spent (start - balance)": books.start - books.balance,
        "sum of usage records": sum(u[2] for u in books.usage),
        "sum of ledger charges": sum(c for _, c in books.charges),
        "sum told to clients": sum(t.credits for t in told if t.fate == "answered"),
        "charged to cut requests": sum(
            u[2] for u in books.usage if u[0] in {r for t in told if t.fate == "cut" for r in t.request_ids}
        ),
        "holds released (process killed)": sum(1 for s in books.holds.values() if s == "released"),
        "credit leases taken": len(books.leases),
        "leases released (holder killed)": sum(1 for s in books.leases.values() if s == "released"),
        "reserved": books.reserved,
    }


def check(books: Books, told: list[Told]) -> dict[str, list[str]]:
    """Each invariant's violations (empty lists when the books are right)."""
    out: dict[str, list[str]] = defaultdict(list)
    usage_credits = sum(u[2] for u in books.usage)
    charged = sum(c for _, c in books.charges)
    if not (books.start - books.balance == usage_credits == charged and books.ledger_sum == books.balance):
        out["books balance"].append(
            f"start - balance = {books.start - books.balance}, usage = {usage_credits}, charges = {charged}, "
            f"ledger sum = {books.ledger_sum}, balance = {books.balance}"
        )

    per_request: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for request_id, key_id, credits, status in books.usage:
        per_request[request_id].append((key_id, credits, status))
    charge_count = Counter(r for r, _ in books.charges)
    for request_id, rows in per_request.items():
        if len(rows) > 1:
            out["billed once"].append(f"{request_id}: {len(rows)} usage records")
    for request_id, count in charge_count.items():
        if count > 1:
            out["billed once"].append(f"{request_id}: {count} charges")
    for t in told:
        billed_runs = [r for r in t.request_ids if any(c > 0 for _, c, _ in per_request.get(r, []))]
        if len(billed_runs) > 1:
            out["billed once"].append(f"{t.kind} {t.request_ids[0]}: billed in {len(billed_runs)} runs")

    known: set[str] = set()
    for t in told:
        known.update(t.request_ids)
        rows = [row for r in t.request_ids for row in per_request.get(r, [])]
        billed = sum(c for _, c, _ in rows)
        if t.fate == "answered" and billed != t.credits:
            out["every answer billed as told"].append(
                f"{t.kind} {t.request_ids[-1]}: told {t.credits}, billed {billed}"
            )
        if t.fate == "failed" and billed:
            out["failures free"].append(f"{t.kind} {t.request_ids[-1]}: failed, billed {billed}")
    for request_id, rows in per_request.items():
        if request_id not in known and any(c for _, c, _ in rows):
            out["every charge has a request"].append(f"{request_id}: billed with no client request")

    for key_id, (threshold, spent, reserved) in books.keys.items():
        billed_key = sum(c for _, k, c, _ in books.usage if k == key_id)
        if threshold is not None and spent > threshold:
            out["limits hold"].append(f"key {key_id}: spent {spent} over its limit {threshold}")
        if threshold is not None and spent != billed_key:  # limited keys here never reset (no_reset)
            out["limits hold"].append(f"key {key_id}: period spent {spent} != its usage {billed_key}")
        if reserved:
            out["nothing reserved"].append(f"key {key_id}: {reserved} still reserved")
    if books.balance < 0 or books.min_balance_after < 0:
        out["limits hold"].append(f"balance went below zero ({books.balance}, min {books.min_balance_after})")
    if books.reserved:
        out["nothing reserved"].append(f"account: {books.reserved} still reserved")
    open_holds = [r for r, s in books.holds.items() if s == "held"]
    if open_holds:
        out["nothing reserved"].append(f"{len(open_holds)} holds still open")
    open_leases = [lease for lease, status in books.leases.items() if status == "held"]
    if open_leases:
        out["nothing reserved"].append(f"{len(open_leases)} credit leases still open")
    return dict(out)


# -- the upstream's script ------------------------------------------------------------------------


def stream_without_done() -> Raw:
    from tests.support.faulty_upstream import stream_frames

    frames = stream_frames(Answer("cut short", prompt_tokens=PROMPT_BYTES), "m", include_usage=True)
    return sse(b"".join(frames[:-1]))


def script(rng: random.Random, count: int) -> list[Outcome]:
    """A seeded mix of answers and every fault the upstream can play."""
    answer = Answer("one two three four five six", prompt_tokens=PROMPT_BYTES + 24)
    choices: list[tuple[float, Outcome]] = [
        (50, answer),
        (5, Answer("too many tokens", prompt_tokens=50 * PROMPT_BYTES)),  # above the hold: capped
        (8, Fail(500)),
        (5, Fail(429, "slow down", retry_after="0")),
        (5, Reset(after_chunks=0)),
        (7, Reset(after_chunks=2)),
        (3, Hang(3.0)),
        (5, Raw(b'{"id": "x", "choices": [{"index": 0, "mess')),  # malformed JSON
        (7, stream_without_done()),
        (5, Answer("slow answer with a few words", prompt_tokens=PROMPT_BYTES + 24, delay=0.3)),
    ]
    weights = [w for w, _ in choices]
    return rng.choices([o for _, o in choices], weights=weights, k=count)


def chaos_catalog(upstream: FaultyUpstream) -> str:
    return 'default_model = "chaos"\n' + catalog_toml(
        [
            {
                "id": MODEL,
                "context_window": 8192,
                "max_output": 64,
                "prices": {"input": 1.0, "output": 2.0},
                "backend": "openai",
                "base_url": upstream.base_url(ROUTE),
                "upstream_model": "chaos-upstream",
                "max_retries": 1,
                "timeout": 1.0,
                "breaker_failures": 1000,
            }
        ]
    )


# -- the traffic ----------------------------------------------------------------------------------


@dataclass
class Plan:
    seed: int
    requests: int
    concurrency: int
    kills: int  # SIGKILLs, at seeded moments, each followed by a restart
    leave_share: float = 0.12  # streams the client leaves after a few events


@dataclass
class Cluster:
    """The gateway processes of one run: one on SQLite (``workers`` processes on its port), or
    replicas on one PostgreSQL store.

    A kill is a SIGKILL of a whole gateway (every process of it), restarted on the same port and
    store. With ``workers`` > 1 every other kill takes one worker process instead: the gateway's
    supervisor replaces it while the other worker keeps serving."""

    gateways: list[Gateway]
    catalog: Path
    env: dict[str, str]
    workers: int = 1
    restarts: int = 0
    worker_kills: int = 0
    down: set[int] = field(default_factory=set)

    def url(self, i: int) -> str:
        return self.gateways[i % len(self.gateways)].url

    async def kill_and_restart(self, i: int) -> None:
        gw = self.gateways[i]
        if self.workers > 1 and self.restarts % 2 == 0:
            await asyncio.to_thread(_kill_one_worker, gw, self.workers)
            self.worker_kills += 1
            self.restarts += 1
            return
        self.down.add(i)
        # Every process at once: the supervisor stopped first so that it starts no new worker, its
        # workers killed (a supervisor's SIGKILL alone would orphan them, still serving the port).
        gw.process.send_signal(signal.SIGSTOP)
        for pid in _workers_of(gw.process.pid):
            os.kill(pid, signal.SIGKILL)
        gw.process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(gw.process.wait)
        fresh = await asyncio.to_thread(
            start_gateway, gw.data_dir, catalog=self.catalog, env=self.env, port=gw.port, args=_args(self.workers)
        )
        fresh.api_key, fresh.management_key = gw.api_key, gw.management_key
        self.gateways[i] = fresh
        self.down.discard(i)
        self.restarts += 1


def _args(workers: int) -> list[str]:
    return ["--workers", str(workers)] if workers > 1 else []


def _workers_of(pid: int) -> list[int]:
    """The worker processes of a ``--workers N`` gateway (its multiprocessing children)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    workers = []
    for child in children:
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                workers.append(int(child))
        except OSError:
            continue
    return workers


def _kill_one_worker(gw: Gateway, workers: int, within: float = 60.0) -> None:
    """SIGKILL one worker of ``gw`` and wait until its supervisor has started a replacement."""
    before = _await_workers(gw, workers, within)
    victim = before[0]
    os.kill(victim, signal.SIGKILL)
    _await_workers(gw, workers, within, without=victim)


def _await_workers(gw: Gateway, workers: int, within: float, without: int | None = None) -> list[int]:
    """The worker pids once ``gw`` has ``workers`` of them (none of them ``without``)."""
    deadline = time.monotonic() + within  # a bound for a loaded machine, not a speed check
    while True:
        now = _workers_of(gw.process.pid)
        if len(now) == workers and without not in now:
            return now
        if time.monotonic() > deadline:
            raise AssertionError(f"{gw.url}: workers {now}, not {workers} (without {without}):\n{gw.log()[-3000:]}")
        time.sleep(0.05)


def _auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}", "x-api-key": key}


async def make_keys(http: httpx.AsyncClient, management_key: str, limits: list[float | None]) -> list[str]:
    out = []
    for i, usd in enumerate(limits):
        body: dict[str, Any] = {"name": f"chaos-{i}"}
        if usd is not None:
            body["limit"] = {"retention": "no_reset", "threshold": usd}
        made = await http.post("/v1/keys", json=body, headers=_auth(management_key))
        made.raise_for_status()
        out.append(made.json()["data"]["key"])
    return out


async def _openai(http: httpx.AsyncClient, url: str, key: str, stream: bool, leave: int | None) -> Told:
    body = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": MAX_TOKENS}
    kind = "chat stream" if stream else "chat"
    if not stream:
        r = await http.post(f"{url}/v1/chat/completions", json=body, headers=_auth(key))
        rid = r.headers.get("x-request-id", "")
        if r.status_code != 200:
            return Told((rid,), kind, "failed")
        return Told((rid,), kind, "answered", int(r.json()["meta"]["usage"]["credits_used"]))
    body |= {"stream": True, "stream_options": {"include_usage": True}}
    async with http.stream("POST", f"{url}/v1/chat/completions", json=body, headers=_auth(key)) as r:
        rid = r.headers.get("x-request-id", "")
        if r.status_code != 200:
            await r.aread()
            return Told((rid,), kind, "failed")
        credits, events = None, 0
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                if credits is None:
                    return Told((rid,), kind, "failed")
                return Told((rid,), kind, "answered", credits)
            event = json.loads(line[6:])
            if "error" in event:
                return Told((rid,), kind, "failed")
            if event.get("meta"):
                credits = int(event["meta"]["usage"]["credits_used"])
            events += 1
            if leave is not None and events >= leave:
                return Told((rid,), kind, "cut")
    return Told((rid,), kind, "cut")


async def _anthropic(http: httpx.AsyncClient, url: str, key: str, stream: bool, leave: int | None) -> Told:
    body = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": MAX_TOKENS}
    kind = "messages stream" if stream else "messages"
    headers = {**_auth(key), "anthropic-version": "2023-06-01"}
    if not stream:
        r = await http.post(f"{url}/v1/messages", json=body, headers=headers)
        rid = r.headers.get("x-request-id", "")
        if r.status_code != 200:
            return Told((rid,), kind, "failed")
        return Told((rid,), kind, "answered", int(r.json()["meta"]["usage"]["credits_used"]))
    async with http.stream("POST", f"{url}/v1/messages", json={**body, "stream": True}, headers=headers) as r:
        rid = r.headers.get("x-request-id", "")
        if r.status_code != 200:
            await r.aread()
            return Told((rid,), kind, "failed")
        credits, events = None, 0
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            if event.get("type") == "error":
                return Told((rid,), kind, "failed")
            if event.get("type") == "message_delta" and event.get("meta"):
                credits = int(event["meta"]["usage"]["credits_used"])
            if event.get("type") == "message_stop":
                return Told((rid,), kind, "answered", credits or 0)
            events += 1
            if leave is not None and events >= leave:
                return Told((rid,), kind, "cut")
    return Told((rid,), kind, "cut")


def _task_ids(task_uuid: str) -> tuple[str, ...]:
    return tuple(f"task_{task_uuid.lower()}_0_{run}" for run in range(1, 6))


async def _submit_task(http: httpx.AsyncClient, url: str, key: str, task_uuid: str) -> bool:
    task = {
        "taskType": "textInference",
        "taskUUID": task_uuid,
        "model": MODEL,
        "messages": [{"role": "user", "content": PROMPT}],
        "settings": {"maxTokens": MAX_TOKENS},
        "deliveryMethod": "async",
        "includeCost": True,
    }
    r = await http.post(f"{url}/v1", json=[task], headers=_auth(key))
    return r.status_code == 200


async def _poll_task(http: httpx.AsyncClient, cluster: Cluster, key: str, task_uuid: str, within: float) -> Told:
    ids = _task_ids(task_uuid)
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            r = await http.post(
                f"{cluster.url(0)}/v1", json=[{"taskType": "getResponse", "taskUUID": task_uuid}], headers=_auth(key)
            )
            items = r.json().get("data", []) if r.status_code == 200 else []
            errors = r.json().get("errors", []) if r.status_code in (200, 400, 500, 502) else []
        except (httpx.HTTPError, ValueError):
            items, errors = [], []
        done = [i for i in items if i.get("status") in ("success", "error")]
        if done and done[0]["status"] == "success":
            return Told(ids, "task", "answered", round(float(done[0]["cost"]) * CREDITS_PER_USD))
        if (done and done[0]["status"] == "error") or (errors and not items):
            return Told(ids, "task", "failed")
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"task {task_uuid} still unfinished after {within}s")
        await asyncio.sleep(0.2)


async def run_traffic(cluster: Cluster, keys: list[str], plan: Plan) -> list[Told]:
    """``plan.requests`` requests across the dialects and keys, ``plan.kills`` SIGKILLs meanwhile."""
    rng = random.Random(plan.seed)
    kinds = ["chat", "chat stream", "messages", "messages stream", "task"]
    jobs = [
        (rng.choice(kinds), rng.choice(keys), rng.random() < plan.leave_share, rng.randint(1, 3), rng.randrange(99))
        for _ in range(plan.requests)
    ]
    kill_at = sorted(rng.sample(range(plan.requests // 5, plan.requests * 4 // 5), plan.kills))
    kills = [(at, rng.randrange(len(cluster.gateways)), rng.random() * 0.3) for at in kill_at]
    told: list[Told] = []
    tasks: list[tuple[str, str]] = []
    rng_ids = random.Random(plan.seed + 1)
    started = 0
    limits = httpx.Timeout(15.0, connect=5.0)

    async def one(http: httpx.AsyncClient, i: int) -> None:
        kind, key, leaves, leave_after, which = jobs[i]
        while which % len(cluster.gateways) in cluster.down:  # noqa: ASYNC110  (wait for the restart)
            await asyncio.sleep(0.05)
        url = cluster.url(which)
        leave = leave_after if leaves else None
        task_uuid = str(uuid.UUID(int=rng_ids.getrandbits(128), version=4))
        try:
            if kind == "task":
                if await _submit_task(http, url, key, task_uuid):
                    tasks.append((key, task_uuid))
                else:
                    told.append(Told(_task_ids(task_uuid), kind, "failed"))
                return
            call = _openai if kind.startswith("chat") else _anthropic
            told.append(await call(http, url, key, kind.endswith("stream"), leave))
        except (httpx.HTTPError, json.JSONDecodeError, KeyError):
            # The connection broke (a killed process) before the request id was seen: matched to
            # the store's unclaimed rows by ``attribute_unknown``.
            told.append(Told(_task_ids(task_uuid) if kind == "task" else (f"unknown-{i}",), kind, "cut"))

    async def worker() -> None:
        nonlocal started
        async with httpx.AsyncClient(timeout=limits) as http:
            while started < plan.requests:
                i = started
                started += 1
                await one(http, i)

    async def killer() -> None:
        for at, victim, delay in kills:
            while started < at:  # noqa: ASYNC110  (a counter, polled)
                await asyncio.sleep(0.02)
            await asyncio.sleep(delay)
            await cluster.kill_and_restart(victim)

    async with asyncio.TaskGroup() as group:
        for _ in range(plan.concurrency):
            group.create_task(worker())
        group.create_task(killer())
    async with httpx.AsyncClient(timeout=limits) as http:
        for key, task_uuid in tasks:
            told.append(await _poll_task(http, cluster, key, task_uuid, within=60.0))
    return told


def attribute_unknown(books: Books, told: list[Told]) -> list[Told]:
    """Requests whose connection broke before their id was seen: the store's rows no client
    request claims are theirs (each counted once, as cut)."""
    known = {r for t in told for r in t.request_ids}
    orphans = sorted({u[0] for u in books.usage if u[0] not in known} | {r for r in books.holds if r not in known})
    unknown = [t for t in told if t.request_ids[0].startswith("unknown-")]
    fixed = [t for t in told if not t.request_ids[0].startswith("unknown-")]
    # Chat and messages requests only (task ids are always known): at most one row each.
    claimable = [r for r in orphans if not r.startswith("task_")]
    if len(claimable) > len(unknown):
        return told  # more rows than broken requests: leave them unclaimed, `check` reports them
    for t, request_id in zip(unknown, claimable + [t.request_ids[0] for t in unknown[len(claimable) :]], strict=True):
        fixed.append(Told((request_id,), t.kind, "cut"))
    return fixed


def kill_summary(cluster: Cluster) -> str:
    whole = cluster.restarts - cluster.worker_kills
    if not cluster.worker_kills:
        return f"{whole} SIGKILLs and restarts"
    return f"{cluster.worker_kills} workers SIGKILLed (replaced), {whole} whole-gateway SIGKILLs and restarts"


def report(books: Books, told: list[Told], violations: dict[str, list[str]], title: str) -> str:
    lines = [f"== {title} =="]
    lines += [f"  {name:34} {value}" for name, value in figures(books, told).items()]
    limited = [f"{spent:,} / {threshold:,}" for threshold, spent, _ in books.keys.values() if threshold is not None]
    lines.append(f"  {'limited keys: spent / limit':34} {', '.join(limited)}")
    lines.append(f"  {'lowest balance after a charge':34} {books.min_balance_after}")
    lines.append(f"  {'by kind':34} {dict(Counter((t.kind, t.fate) for t in told))}")
    lines.append("  invariants: " + ("all hold" if not violations else f"BROKEN {violations}"))
    return "\n".join(lines)


def start_cluster(
    root: Path, upstream: FaultyUpstream, replicas: int, env: dict[str, str], start_credits: int, workers: int = 1
) -> Cluster:
    catalog = root / "catalog.toml"
    catalog.write_text(chaos_catalog(upstream))
    full_env = {
        "GATEWRIGHT_DEFAULT_REQUESTS_PER_MINUTE": "1000000",
        "GATEWRIGHT_DEFAULT_TOKENS_PER_MINUTE": "1000000000",
        "GATEWRIGHT_STARTING_CREDITS": str(start_credits),
        "GATEWRIGHT_TASK_LEASE_SECONDS": "2",
        "GATEWRIGHT_AUTH_CACHE_SECONDS": "0.5",
        **env,
    }
    gateways: list[Gateway] = []
    try:
        for i in range(replicas):
            gw = start_gateway(root / f"gw{i}", catalog=catalog, env=full_env, args=_args(workers))
            if gateways:
                gw.api_key, gw.management_key = gateways[0].api_key, gateways[0].management_key
            gateways.append(gw)
    except BaseException:
        for gw in gateways:
            gw.stop()
        raise
    return Cluster(gateways, catalog, full_env, workers)
