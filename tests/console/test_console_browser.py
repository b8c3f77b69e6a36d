"""The web console in a real browser (Debian's Chromium driven by Playwright): sign in, keys,
a streamed playground call, the chart of the data just made, and one account never seeing
another's data. The gateway is the real application on a real port (uvicorn on the in-process
apps' loop) with the fake models; screenshots of each page go to ``build/test-artifacts/console``."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import openai
import pytest
import uvicorn
from playwright import sync_api

from tests.support.app import AppGateway, _Loop, app_gateway
from tests.support.procs import free_port, wait_http

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
ARTIFACTS = Path(os.environ.get("GATEWRIGHT_TEST_ARTIFACTS", "build/test-artifacts")) / "console"
TIMEOUT_MS = 30_000


class Served:
    def __init__(self, gw: AppGateway, url: str) -> None:
        self.gw = gw
        self.url = url


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed (apt-get install chromium; .ci/run does it)")
    with app_gateway(tmp_path_factory.mktemp("console")) as gw:
        port = free_port()
        # The app's lifespan already ran (app_gateway): uvicorn only serves it on a real socket.
        server = uvicorn.Server(
            uvicorn.Config(gw.app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
        )
        running = asyncio.run_coroutine_threadsafe(server.serve(), _Loop.get())
        try:
            wait_http(f"http://127.0.0.1:{port}/health")
            yield Served(gw, f"http://127.0.0.1:{port}")
        finally:
            server.should_exit = True
            running.result(30)


@pytest.fixture(scope="module")
def browser(served: Served) -> Iterator[object]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _page(browser: object) -> sync_api.Page:
    context = browser.new_context(viewport={"width": 1280, "height": 860})  # type: ignore[attr-defined]
    page: sync_api.Page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.errors = errors  # type: ignore[attr-defined]
    return page


def _sign_in(page: sync_api.Page, url: str, key: str) -> None:
    page.goto(f"{url}/ui")
    page.fill("#sign-in-key", key)
    page.click("#sign-in button[type=submit]")
    page.wait_for_selector("#top:not([hidden])")


def _shot(page: sync_api.Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_the_console_end_to_end(served: Served, browser: object) -> None:
    gw, url = served.gw, served.url
    assert gw.management_key is not None
    page = _page(browser)
    _sign_in(page, url, gw.management_key)
    # The key lives on the server: the browser has an HttpOnly, SameSite=Strict cookie and no storage.
    cookie = next(c for c in page.context.cookies() if c["name"] == "gw_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert gw.management_key not in cookie["value"]
    stored = page.evaluate("() => JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage)])")
    assert gw.management_key not in stored

    # Keys: create one (shown once), see it listed, disable it.
    page.goto(f"{url}/ui#/keys")
    page.fill("#new-key-name", "browser-made")
    page.fill("#create-key input[name=models]", "echo, thinker")
    page.click("#create-key button[type=submit]")
    secret = page.text_content("#new-key-secret")
    assert secret and secret.startswith("gw-")
    row = page.locator("#keys tr", has_text="browser-made")
    assert row.locator(".key-state").text_content() == "active"
    assert row.locator("td", has_text="echo thinker").count() == 1  # its model allow-list
    row.locator("button.toggle").click()
    page.locator("#keys tr", has_text="browser-made").locator(".key-state", has_text="disabled").wait_for()
    with pytest.raises(openai.PermissionDeniedError, match="disabled"):  # the API agrees: the key is off
        gw.openai(secret).chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}])

    # Playground: a management key makes an API key for the session, then a streamed call.
    page.goto(f"{url}/ui#/playground")
    page.click("#make-session-key")
    page.locator("#make-session-key").wait_for(state="detached")  # the page is drawn again with the key
    page.select_option("#play-model", "echo")
    page.fill("#play-message", "streamed words from the console")
    page.click("#play-send")
    page.locator("#answer", has_text="streamed words from the console").wait_for()
    page.locator("#play-usage", has_text="credits").wait_for()
    usage_text = page.text_content("#play-usage") or ""
    records = gw.http.get("/v1/billing/usage", headers={"authorization": f"Bearer {gw.management_key}"}).json()
    last = records["data"][0]
    assert last["model"] == "echo" and f"{last['credits']} credits" in usage_text
    page.click("#view-code")
    assert "chat.completions.create" in (page.text_content("#code-python") or "")
    _shot(page, "playground")

    # Overview: the chart is drawn from the call just made; switching to tokens redraws it.
    page.goto(f"{url}/ui#/overview")
    bar = page.locator("svg.chart rect.bar[data-model=echo]")
    bar.first.wait_for()
    assert int(bar.first.get_attribute("data-value") or 0) == sum(
        r["credits"] for r in records["data"] if r["model"] == "echo"
    )
    page.select_option("#chart-measure", "tokens")
    page.locator("svg.chart[data-measure=tokens]").wait_for()
    assert int(page.locator("svg.chart rect.bar[data-model=echo]").first.get_attribute("data-value") or 0) == sum(
        r["total_tokens"] for r in records["data"] if r["model"] == "echo"
    )
    _shot(page, "overview")

    # Request log: the playground's call with its dialect and latency (as the usage API has them);
    # an Anthropic-dialect call appears under the dialect filter, alone.
    messages = gw.anthropic().messages.with_raw_response.create(
        model="echo", max_tokens=16, messages=[{"role": "user", "content": "through messages"}]
    )
    # A record from before dialect and latency were kept (migration 0006 leaves them null).
    with sqlite3.connect(gw.data_dir / "gatewright.db") as db:
        db.execute(
            "INSERT INTO usage_records (request_id, account_id, key_id, key_prefix, model, input_tokens, "
            "cached_tokens, output_tokens, reasoning_tokens, credits, usd, status, estimated, created_at) "
            "SELECT 'req_from_before', account_id, key_id, key_prefix, model, 1, 0, 1, 0, 0, 0.0, 'ok', 0, "
            "created_at FROM usage_records WHERE request_id = ?",
            (last["request_id"],),
        )
    page.goto(f"{url}/ui#/log")
    played = page.locator(f"#log tr[data-request='{last['request_id']}']")
    played.wait_for()
    old_row = page.locator("#log tr[data-request=req_from_before]")
    assert old_row.locator(".log-dialect").text_content() == "—" == old_row.locator(".log-latency").text_content()
    assert played.locator(".log-dialect").text_content() == "openai" == last["dialect"]
    assert played.locator(".log-latency").text_content() == f"{last['latency_ms']:,} ms"
    page.select_option("#log-dialect", "anthropic")
    page.click("#log-filter button[type=submit]")
    page.locator(f"#log tr[data-request='{last['request_id']}']").wait_for(state="detached")
    shown = page.locator("#log tr[data-request]")
    assert shown.count() >= 1 and set(shown.locator(".log-dialect").all_text_contents()) == {"anthropic"}
    assert page.locator(f"#log tr[data-request='{messages.headers['x-request-id']}']").count() == 1
    page.select_option("#log-dialect", "")
    page.click("#log-filter button[type=submit]")
    played.wait_for()
    _shot(page, "request-log")

    # Keys: the playground's key shows when it was last used; the key never called shows "never".
    page.goto(f"{url}/ui#/keys")
    page.locator("#keys tr", has_text="console session").locator(".key-last-used").wait_for()
    used = page.locator("#keys tr", has_text="console session").locator(".key-last-used").text_content() or ""
    assert used[:10] == last["created_at"][:10] and used != "never"
    assert page.locator("#keys tr", has_text="browser-made").locator(".key-last-used").text_content() == "never"

    # Editing scopes, allow-list and expiry: a bad value is refused by the API and shown in the
    # dialog, which stays open; good values are saved and listed.
    page.locator("#keys tr", has_text="browser-made").locator("button.edit").click()
    dialog = page.locator("#edit-key-dialog")
    dialog.locator("input[name=scopes]").fill("model:chat model:bogus")
    dialog.locator("button[type=submit]").click()
    page.locator("#edit-key-error", has_text="Unknown scope 'model:bogus'").wait_for()
    dialog.locator("input[name=scopes]").fill("model:chat model:responses")
    dialog.locator("input[name=expires]").fill("2020-01-01")
    dialog.locator("button[type=submit]").click()
    page.locator("#edit-key-error", has_text="in the past").wait_for()
    next_year = str(datetime.now(UTC).year + 1)
    dialog.locator("input[name=expires]").fill(f"{next_year}-06-30")
    dialog.locator("input[name=models]").fill("echo")
    dialog.locator("button[type=submit]").click()
    dialog.wait_for(state="detached")
    refused = "Failed to load resource: the server responded with a status of 400 (Bad Request)"
    assert page.errors == [refused, refused]  # type: ignore[attr-defined]  # the two bad edits, and nothing else
    page.errors.clear()  # type: ignore[attr-defined]
    edited = page.locator("#keys tr", has_text="browser-made")
    edited.locator(".key-expires", has_text=f"{next_year}-06-30").wait_for()
    assert edited.locator(".key-scopes").text_content() == "model:chat model:responses"
    assert edited.locator(".key-models").text_content() == "echo"
    saved = gw.http.get("/v1/keys", headers={"authorization": f"Bearer {gw.management_key}"}).json()["data"]
    (key,) = [k for k in saved if k["name"] == "browser-made"]
    assert key["scopes"] == ["model:chat", "model:responses"] and key["models"] == ["echo"]
    assert datetime.fromtimestamp(key["expires_at"], UTC).date().isoformat() == f"{next_year}-06-30"
    _shot(page, "keys")
    # Models: each model's deployments and whether each is up; three failures in a row of the
    # "broken" model (fake.toml: a 500 each time) open its deployment's breaker.
    for _ in range(3):
        with pytest.raises(openai.InternalServerError):
            gw.openai().chat.completions.create(model="broken", messages=[{"role": "user", "content": "hi"}])
    page.goto(f"{url}/ui#/models")
    page.locator("#models tr[data-model=thinker]").wait_for()
    assert page.locator("#models tr[data-model=echo] li[data-deployment=echo]").get_attribute("data-state") == "up"
    broken = page.locator("#models tr[data-model=broken]")
    assert broken.locator("li.deployment").get_attribute("data-state") in ("down", "probing")  # never "up"
    assert "broken#0 (fake)" in (broken.locator("li.deployment").text_content() or "")
    _shot(page, "models")

    # Signing out ends the session on the server: the old cookie opens nothing any more.
    page.click("#sign-out")
    page.wait_for_selector("#sign-in:not([hidden])")
    old = {"cookie": f"gw_console={cookie['value']}"}
    assert gw.http.get("/ui/api/v1/keys", headers=old).status_code == 401
    assert not page.errors  # type: ignore[attr-defined]


def test_operator_makes_an_account_grants_credits_and_it_sees_only_its_own_data(
    served: Served, browser: object
) -> None:
    gw, url = served.gw, served.url
    assert gw.operator_key is not None
    gw.openai().chat.completions.create(model="echo", messages=[{"role": "user", "content": "first account only"}])
    page = _page(browser)
    answers: list[str] = []
    page.on("dialog", lambda dialog: dialog.accept(answers.pop(0)) if answers else dialog.accept())

    # The operator: an account made with starting credits, then a grant; codes minted and listed.
    _sign_in(page, url, gw.operator_key)
    page.locator("#create-account").wait_for()
    page.fill("#new-account-name", "second")
    page.fill("#create-account input[name=credits]", "1000000")
    page.click("#create-account button[type=submit]")
    management = page.text_content("#new-account-key") or ""
    assert management.startswith("gwm-")
    row = page.locator("#accounts tr", has_text="second")
    assert row.locator(".account-balance").text_content() == "1,000,000"
    answers[:] = ["500000", "console grant"]
    row.locator("button.grant").click()
    page.locator("#accounts tr", has_text="second").locator(".account-balance", has_text="1,500,000").wait_for()
    _shot(page, "operator-accounts")
    page.goto(f"{url}/ui#/codes")
    page.fill("#mint-codes input[name=usd]", "2")
    page.fill("#mint-codes input[name=count]", "2")
    page.click("#mint-codes button[type=submit]")
    codes = (page.text_content("#minted-codes") or "").split()
    assert len(codes) == 2
    assert page.locator("#codes tr", has_text="unspent").count() == 2
    _shot(page, "operator-codes")
    page.goto(f"{url}/ui#/usage")
    page.locator("#all-usage td", has_text="echo").first.wait_for()
    _shot(page, "operator-usage")
    page.click("#sign-out")
    page.wait_for_selector("#sign-in:not([hidden])")

    # The new account's management key: the granted balance, and none of the first account's data.
    _sign_in(page, url, management)
    page.locator("#balance-credits", has_text="1,500,000 credits").wait_for()
    assert page.locator("#chart-empty").count() == 1
    page.goto(f"{url}/ui#/log")
    page.wait_for_selector("#log")
    assert page.locator("#log tr").count() == 1  # the header row: no request of the first account
    page.goto(f"{url}/ui#/keys")
    page.wait_for_selector("#keys")
    assert page.locator("#keys tr").count() == 1  # none of the first account's keys
    assert not page.errors  # type: ignore[attr-defined]


def test_pages_carry_the_security_headers_and_state_changes_need_the_csrf_token(served: Served) -> None:
    gw = served.gw
    page = gw.http.get("/ui")
    csp = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert page.headers["cache-control"] == "no-store"
    signed = gw.http.post("/ui/session", json={"key": gw.management_key})
    cookie = {"cookie": f"gw_console={signed.cookies['gw_console']}"}
    refused = gw.http.post("/ui/api/v1/keys", json={"name": "forged"}, headers=cookie)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "csrf"
    assert gw.http.post("/ui/session", json={"key": "gw-" + "0" * 32}).status_code == 401


def test_sessions_are_kept_in_the_store_sealed_and_end_when_they_expire(served: Served) -> None:
    gw = served.gw
    database = gw.data_dir / "gatewright.db"
    with sqlite3.connect(database) as db:
        before = {row[0] for row in db.execute("SELECT id_hash FROM console_sessions")}
    signed = gw.http.post("/ui/session", json={"key": gw.management_key})
    sid = signed.cookies["gw_console"]
    cookie = {"cookie": f"gw_console={sid}"}
    assert gw.http.get("/ui/api/v1/keys", headers=cookie).status_code == 200
    with sqlite3.connect(database) as db:
        rows = [row for row in db.execute("SELECT * FROM console_sessions") if row[0] not in before]
        # Neither the cookie's id nor the key is in the store: rows are found by a hash of the id,
        # and the key is sealed under a key derived from it.
        stored = repr(rows)
        assert len(rows) == 1 and sid not in stored and str(gw.management_key) not in stored
        db.execute(
            "UPDATE console_sessions SET expires_at = '2000-01-01 00:00:00.000000' WHERE id_hash = ?", rows[0][:1]
        )
    assert gw.http.get("/ui/api/v1/keys", headers=cookie).status_code == 401  # expired: no session
    assert gw.http.get("/ui/session", headers=cookie).json() == {"signed_in": False}


def test_signing_in_again_ends_the_session_the_browser_held(served: Served) -> None:
    gw = served.gw
    first = gw.http.post("/ui/session", json={"key": gw.management_key}).cookies["gw_console"]
    old = {"cookie": f"gw_console={first}"}
    again = gw.http.post("/ui/session", json={"key": gw.api_key}, headers=old)
    assert again.status_code == 200 and again.cookies["gw_console"] != first
    assert gw.http.get("/ui/session", headers=old).json() == {"signed_in": False}  # not left alive in the store
    new = {"cookie": f"gw_console={again.cookies['gw_console']}"}
    assert gw.http.get("/ui/session", headers=new).json()["kind"] == "api"


def test_a_sign_in_a_cross_site_form_could_send_is_refused(served: Served) -> None:
    gw = served.gw
    # What <form enctype="text/plain"> on another site can post: a JSON-shaped body, no JSON type.
    body = f'{{"key": "{gw.api_key}", "x": "="}}'
    forged = gw.http.post("/ui/session", content=body, headers={"content-type": "text/plain"})
    assert forged.status_code == 415 and "gw_console" not in forged.cookies
    signed = gw.http.post("/ui/session", content=body, headers={"content-type": "application/json; charset=utf-8"})
    assert signed.status_code == 200 and signed.cookies["gw_console"]
