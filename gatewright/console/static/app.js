// The gatewright console: plain ES modules, no dependency, no network beyond this origin.
// Every datum comes from the public API through the same-origin proxy /ui/api/… (the session's
// key is attached on the server; the browser never holds it beyond the sign-in form).

const CREDITS_PER_USD = 2000000;
const COLORS = ["#3b6fd8", "#d8703b", "#2e9e6a", "#9b4fd1", "#c93b5b", "#7a8a2e", "#3bb3c9", "#8a5a2e"];
let me = null; // {kind, prefix, csrf, playground_key}

// -- DOM helpers ---------------------------------------------------------------------------------
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
  return el;
}
const $ = (sel) => document.querySelector(sel);
const page = () => $("#page");
// Each route renders into a box of its own: a slow page that finishes after the person moved on
// writes into a detached box, never over the page now shown.
let current = null;
const usd = (credits) => (credits / CREDITS_PER_USD).toLocaleString(undefined, { style: "currency", currency: "USD", maximumFractionDigits: 6 });
const num = (n) => (n ?? 0).toLocaleString();
const day = (iso) => iso.slice(0, 10);

// -- API -----------------------------------------------------------------------------------------
async function api(method, path, body, extraHeaders = {}) {
  const headers = { ...extraHeaders };
  if (method !== "GET") headers["x-csrf-token"] = me ? me.csrf : "";
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch("/ui/api" + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: "same-origin" });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error((data.error && data.error.message) || `HTTP ${res.status}`);
  return data;
}

async function allUsage(params) {
  const rows = [];
  let after = null;
  for (let i = 0; i < 20; i++) {
    const q = new URLSearchParams({ ...params, limit: "1000" });
    if (after !== null) q.set("after", after);
    const page = await api("GET", "/v1/billing/usage?" + q);
    rows.push(...page.data);
    if (!page.has_more) return { rows, totals: page.totals };
    after = page.last_id;
  }
  return { rows, totals: null };
}

// -- session -------------------------------------------------------------------------------------
async function loadSession() {
  const res = await fetch("/ui/session", { credentials: "same-origin" });
  const data = res.ok ? await res.json() : {};
  me = data.signed_in ? data : null;
}

async function signIn(event) {
  event.preventDefault();
  const input = $("#sign-in-key");
  const res = await fetch("/ui/session", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ key: input.value }), credentials: "same-origin" });
  input.value = "";
  if (!res.ok) {
    const data = await res.json().catch(() => ({}));
    $("#sign-in-error").textContent = (data.error && data.error.message) || "Sign-in failed.";
    return;
  }
  $("#sign-in-error").textContent = "";
  await loadSession();
  location.hash = me && me.kind === "operator" ? "#/accounts" : "#/overview";
  route();
}

async function signOut() {
  await fetch("/ui/session", { method: "DELETE", headers: { "x-csrf-token": me ? me.csrf : "" }, credentials: "same-origin" });
  me = null;
  location.hash = "";
  route();
}

// -- pages ---------------------------------------------------------------------------------------
// Which kinds of key see which page: an account's keys its data; the operator's credential the
// operator's API (its calls to an account's routes answer 403).
const ACCOUNT = ["api", "management"];
const PAGES = {
  overview: { title: "Overview", render: overview, kinds: ACCOUNT },
  keys: { title: "Keys", render: keysPage, kinds: ["management"] },
  log: { title: "Request log", render: requestLog, kinds: ACCOUNT },
  playground: { title: "Playground", render: playground, kinds: ACCOUNT },
  accounts: { title: "Accounts", render: accountsPage, kinds: ["operator"] },
  codes: { title: "Redemption codes", render: codesPage, kinds: ["operator"] },
  usage: { title: "All usage", render: allUsagePage, kinds: ["operator"] },
  models: { title: "Models", render: models, kinds: [...ACCOUNT, "operator"] },
};
const KIND_NAMES = { api: "API key", management: "management key", operator: "operator" };
// The request log's dialect filter: the names usage records carry ("" = any).
const DIALECTS = ["", "openai", "anthropic", "openai-responses", "task-api", "openai-embeddings"];

function route() {
  const signedIn = me !== null;
  $("#sign-in").hidden = signedIn;
  $("#top").hidden = !signedIn;
  if (!signedIn) { page().replaceChildren(); return; }
  const home = me.kind === "operator" ? "accounts" : "overview";
  let name = (location.hash.match(/^#\/(\w+)/) || [])[1] || home;
  if (!PAGES[name] || !PAGES[name].kinds.includes(me.kind)) name = home;
  $("#who").textContent = `${KIND_NAMES[me.kind] || me.kind} ${me.prefix}`;
  $("#nav").replaceChildren(...Object.entries(PAGES)
    .filter(([, p]) => p.kinds.includes(me.kind))
    .map(([id, p]) => h("a", { href: `#/${id}`, class: id === name ? "active" : null, text: p.title })));
  document.title = `${PAGES[name].title} · gatewright`;
  const box = (current = h("div", { "data-page": name }, h("p", { class: "muted", text: "Loading…" })));
  page().replaceChildren(box);
  PAGES[name].render().catch((err) => box.replaceChildren(h("p", { class: "error", text: err.message })));
}

// Overview: balance, this month's spend, a chart by day and model (credits or tokens), top models.
async function overview() {
  const box = current;
  const balance = await api("GET", "/v1/billing/balance");
  const now = new Date();
  const monthStart = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1)).toISOString();
  const since = new Date(Date.now() - 30 * 86400000).toISOString().slice(0, 10);
  const month = await api("GET", "/v1/billing/usage?" + new URLSearchParams({ since: monthStart, limit: "1" }));
  const { rows } = await allUsage({ since });
  const byModel = {};
  for (const r of rows) {
    const m = (byModel[r.model] ||= { requests: 0, credits: 0, tokens: 0 });
    m.requests++; m.credits += r.credits; m.tokens += r.total_tokens;
  }
  const top = Object.entries(byModel).sort((a, b) => b[1].credits - a[1].credits);
  let measure = "credits";
  const chartBox = h("div", { id: "chart" });
  const draw = () => chartBox.replaceChildren(chart(rows, measure));
  const toggle = h("select", { id: "chart-measure", onchange: (e) => { measure = e.target.value; draw(); } },
    h("option", { value: "credits", text: "credits" }), h("option", { value: "tokens", text: "tokens" }));
  draw();
  box.replaceChildren(
    h("div", { class: "cards" },
      h("div", { class: "card" }, h("div", { class: "muted", text: "Balance" }),
        h("div", { class: "big", id: "balance-credits", text: `${num(balance.balance)} credits` }),
        h("div", { id: "balance-usd", text: usd(balance.balance) }),
        h("div", { class: "muted", text: `status: ${balance.status}; held by requests in flight: ${num(balance.reserved)}` })),
      h("div", { class: "card" }, h("div", { class: "muted", text: "Spend this month" }),
        h("div", { class: "big", id: "month-spend", text: usd(month.totals.credits) }),
        h("div", { text: `${num(month.totals.requests)} requests, ${num(month.totals.input_tokens + month.totals.output_tokens)} tokens` }))),
    h("div", { class: "card" }, h("div", { class: "row" }, h("h2", { text: "Last 30 days, by day and model" }), h("label", {}, "show", toggle)), chartBox),
    h("div", { class: "card" }, h("h2", { text: "Top models (30 days)" }),
      h("table", { id: "top-models" }, h("tr", {}, h("th", { text: "model" }), h("th", { text: "requests" }), h("th", { text: "tokens" }), h("th", { text: "credits" }), h("th", { text: "USD" })),
        top.map(([model, m]) => h("tr", {}, h("td", { text: model }), h("td", { text: num(m.requests) }), h("td", { text: num(m.tokens) }), h("td", { text: num(m.credits) }), h("td", { text: usd(m.credits) }))))),
  );
}

// A stacked bar chart drawn as SVG: one bar per day, one colour per model.
function chart(rows, measure) {
  const NS = "http://www.w3.org/2000/svg";
  const s = (tag, attrs) => { const el = document.createElementNS(NS, tag); for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v); return el; };
  const days = {};
  const modelSet = new Set();
  for (const r of rows) {
    const d = (days[day(r.created_at)] ||= {});
    d[r.model] = (d[r.model] || 0) + (measure === "credits" ? r.credits : r.total_tokens);
    modelSet.add(r.model);
  }
  const dayList = Object.keys(days).sort();
  const modelList = [...modelSet].sort();
  if (!dayList.length) return h("p", { class: "muted", id: "chart-empty", text: "No requests in the last 30 days." });
  const W = 800, H = 240, left = 60, bottom = 30;
  const max = Math.max(...dayList.map((d) => Object.values(days[d]).reduce((a, b) => a + b, 0))) || 1;
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${measure} by day and model`, "data-measure": measure });
  const bw = Math.min(40, (W - left - 10) / dayList.length - 4);
  svg.append(s("line", { x1: left, y1: H - bottom, x2: W, y2: H - bottom, stroke: "#999" }));
  const label = s("text", { x: 4, y: 14, "font-size": 11, fill: "#555" }); label.textContent = `${num(max)} ${measure}`; svg.append(label);
  dayList.forEach((d, i) => {
    const x = left + i * (bw + 4) + 2;
    let y = H - bottom;
    modelList.forEach((m, j) => {
      const v = days[d][m] || 0;
      if (!v) return;
      const bh = Math.max(1, (v / max) * (H - bottom - 20));
      y -= bh;
      const rect = s("rect", { x, y, width: bw, height: bh, fill: COLORS[j % COLORS.length], class: "bar", "data-day": d, "data-model": m, "data-value": v });
      const title = document.createElementNS(NS, "title"); title.textContent = `${d} ${m}: ${num(v)} ${measure}`; rect.append(title);
      svg.append(rect);
    });
    const t = s("text", { x: x, y: H - 12, "font-size": 10, fill: "#555" }); t.textContent = d.slice(5); svg.append(t);
  });
  const legend = h("div", { class: "legend" }, modelList.map((m, j) => h("span", {}, h("i", { style: null, "data-color": COLORS[j % COLORS.length] }), m)));
  legend.querySelectorAll("i").forEach((i) => { i.style.background = i.dataset.color; });
  return h("div", {}, svg, legend);
}

// Keys: list, create (shown once), edit, disable/enable, delete with confirmation.
async function keysPage() {
  const box = current;
  const keys = (await api("GET", "/v1/keys")).data;
  const created = h("div", { id: "created-key" });
  const form = h("form", { class: "card", id: "create-key" },
    h("h2", { text: "Create an API key" }),
    h("div", { class: "row" },
      h("label", {}, "name", h("input", { name: "name", id: "new-key-name" })),
      h("label", {}, "limit (USD)", h("input", { name: "threshold", type: "number", step: "any", min: "0" })),
      h("label", {}, "period", h("select", { name: "retention" }, ["month", "week", "day", "no_reset"].map((r) => h("option", { value: r, text: r })))),
      h("label", {}, "scopes", h("input", { name: "scopes", value: "model:chat" })),
      h("label", {}, "models (empty: all)", h("input", { name: "models", placeholder: "echo, other-model" })),
      h("label", {}, "expires", h("input", { name: "expires", type: "date" })),
      h("button", { type: "submit", text: "Create" })),
    created);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = new FormData(form);
    const body = { name: f.get("name") || undefined, scopes: String(f.get("scopes")).split(/[\s,]+/).filter(Boolean) };
    if (f.get("threshold")) body.limit = { threshold: Number(f.get("threshold")), retention: f.get("retention") };
    const allowed = String(f.get("models") || "").split(/[\s,]+/).filter(Boolean);
    if (allowed.length) body.models = allowed;
    if (f.get("expires")) body.expires_at = Math.floor(new Date(f.get("expires")).getTime() / 1000);
    try {
      const made = (await api("POST", "/v1/keys", body)).data;
      await keysPage();
      const secret = h("code", { class: "secret", id: "new-key-secret", text: made.key });
      $("#created-key").replaceChildren(h("p", {}, "Your new key (shown once): ", secret, " ",
        h("button", { type: "button", id: "copy-key", onclick: () => navigator.clipboard.writeText(made.key), text: "Copy" })));
    } catch (err) { created.replaceChildren(h("p", { class: "error", text: err.message })); }
  });
  const rows = keys.map((k) => {
    const limit = k.limit ? `${usd(k.monthly_usage * CREDITS_PER_USD)} of $${k.limit.threshold} / ${k.limit.retention}` : `${usd(k.monthly_usage * CREDITS_PER_USD)} (no limit)`;
    const state = k.disabled ? "disabled" : "active";
    return h("tr", { "data-prefix": k.prefix },
      h("td", { class: "key-name", text: k.name || "—" }), h("td", { text: k.prefix }), h("td", { text: k.created_at.replace("T", " ").slice(0, 19) }),
      h("td", { class: "key-last-used", text: k.last_used_at ? k.last_used_at.replace("T", " ").slice(0, 19) : "never" }),
      h("td", { text: limit }), h("td", { class: "key-scopes", text: (k.scopes || []).join(" ") }),
      h("td", { class: "key-models", text: k.models ? k.models.join(" ") : "all" }),
      h("td", { class: "key-expires", text: k.expires_at ? new Date(k.expires_at * 1000).toISOString().slice(0, 10) : "never" }),
      h("td", { class: "key-state", text: state }),
      h("td", {},
        h("button", { type: "button", class: "edit", onclick: () => editKey(k), text: "Edit" }), " ",
        h("button", { type: "button", class: "toggle", onclick: () => setDisabled(k, !k.disabled), text: k.disabled ? "Enable" : "Disable" }), " ",
        h("button", { type: "button", class: "delete", onclick: () => deleteKey(k), text: "Delete" })));
  });
  box.replaceChildren(form, h("table", { id: "keys" },
    h("tr", {}, ["name", "prefix", "created", "last used", "spend this month vs limit", "scopes", "models", "expires", "state", ""].map((t) => h("th", { text: t }))),
    rows));
}

// Edit a key in a dialog: name, spend limit, scopes, model allow-list, expiry. Only what changed
// is sent; the API's refusal of a bad value is shown in the dialog, which stays open.
function editKey(k) {
  const date = (stamp) => (stamp ? new Date(stamp * 1000).toISOString().slice(0, 10) : "");
  const words = (text) => String(text || "").split(/[\s,]+/).filter(Boolean);
  const error = h("p", { class: "error", id: "edit-key-error" });
  const form = h("form", { id: "edit-key" },
    h("h2", { text: `Edit key ${k.prefix}` }),
    h("label", {}, "name", h("input", { name: "name", value: k.name || "" })),
    h("div", { class: "row" },
      h("label", {}, "limit (USD; empty: none)", h("input", { name: "threshold", type: "number", step: "any", value: k.limit ? String(k.limit.threshold) : "" })),
      h("label", {}, "period", h("select", { name: "retention" }, ["month", "week", "day", "no_reset"].map((r) =>
        h("option", { value: r, text: r, selected: ((k.limit && k.limit.retention) || "month") === r }))))),
    h("label", {}, "scopes", h("input", { name: "scopes", value: (k.scopes || []).join(" ") })),
    h("label", {}, "models (empty: all)", h("input", { name: "models", value: k.models ? k.models.join(" ") : "" })),
    h("label", {}, "expires (empty: never)", h("input", { name: "expires", type: "date", value: date(k.expires_at) })),
    error,
    h("div", { class: "row" }, h("button", { type: "submit", text: "Save" }), h("button", { type: "button", class: "cancel", text: "Cancel" })));
  const dialog = h("dialog", { id: "edit-key-dialog" }, form);
  const close = () => { dialog.close(); dialog.remove(); };
  form.querySelector(".cancel").addEventListener("click", close);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = new FormData(form);
    const body = {};
    if ((f.get("name") || "") !== (k.name || "")) body.name = f.get("name") || null;
    const threshold = String(f.get("threshold") || "").trim();
    const limit = threshold ? { threshold: Number(threshold), retention: f.get("retention") } : null;
    if (JSON.stringify(limit) !== JSON.stringify(k.limit ? { threshold: k.limit.threshold, retention: k.limit.retention } : null)) body.limit = limit;
    const scopes = words(f.get("scopes"));
    if (scopes.join(" ") !== (k.scopes || []).join(" ")) body.scopes = scopes;
    const allowed = words(f.get("models"));
    if (allowed.join(" ") !== (k.models || []).join(" ")) body.models = allowed.length ? allowed : null;
    if (f.get("expires") !== date(k.expires_at)) body.expires_at = f.get("expires") ? Math.floor(new Date(f.get("expires")).getTime() / 1000) : null;
    try {
      if (Object.keys(body).length) await api("PATCH", `/v1/keys/${k.prefix}`, body);
      close();
      await keysPage();
    } catch (err) { error.textContent = err.message; }
  });
  document.body.append(dialog);
  dialog.showModal();
}
async function setDisabled(k, disabled) { await api("PATCH", `/v1/keys/${k.prefix}`, { disabled }); await keysPage(); }
async function deleteKey(k) {
  if (!confirm(`Delete key ${k.prefix} (${k.name || "no name"})? It will never work again.`)) return;
  await api("DELETE", `/v1/keys/${k.prefix}`);
  await keysPage();
}

// Request log: newest first, filters by key, model, status and time.
async function requestLog() {
  const box = current;
  const form = h("form", { class: "row card", id: "log-filter" },
    h("label", {}, "key prefix", h("input", { name: "key", size: 10 })),
    h("label", {}, "model", h("input", { name: "model" })),
    h("label", {}, "status", h("select", { name: "status" }, ["", "ok", "aborted", "error"].map((s) => h("option", { value: s, text: s || "any" })))),
    h("label", {}, "dialect", h("select", { name: "dialect", id: "log-dialect" }, DIALECTS.map((d) => h("option", { value: d, text: d || "any" })))),
    h("label", {}, "since", h("input", { name: "since", type: "datetime-local" })),
    h("label", {}, "until", h("input", { name: "until", type: "datetime-local" })),
    h("button", { type: "submit", text: "Filter" }));
  const out = h("div", {});
  const load = async () => {
    const params = new URLSearchParams({ limit: "200" });
    for (const [k, v] of new FormData(form)) if (v) params.set(k, k === "since" || k === "until" ? new Date(v).toISOString() : v);
    try {
      const page = await api("GET", "/v1/billing/usage?" + params);
      out.replaceChildren(
        h("p", { class: "muted", text: `${num(page.totals.requests)} requests, ${num(page.totals.credits)} credits (${usd(page.totals.credits)}) match` }),
        h("table", { id: "log" },
          h("tr", {}, ["time", "dialect", "key", "model", "in", "out", "cached", "reasoning", "credits", "latency", "status", "request id"].map((t) => h("th", { text: t }))),
          page.data.map((r) => h("tr", { "data-request": r.request_id },
            h("td", { text: r.created_at.replace("T", " ").slice(0, 19) }), h("td", { class: "log-dialect", text: r.dialect ?? "—" }),
            h("td", { text: r.key_prefix }), h("td", { text: r.model }),
            h("td", { text: num(r.input_tokens) }), h("td", { text: num(r.output_tokens) }), h("td", { text: num(r.cached_tokens) }),
            h("td", { text: num(r.reasoning_tokens) }), h("td", { text: num(r.credits) }),
            h("td", { class: "log-latency", text: r.latency_ms === null || r.latency_ms === undefined ? "—" : `${num(r.latency_ms)} ms` }),
            h("td", { text: r.status }), h("td", { text: r.request_id })))));
    } catch (err) { out.replaceChildren(h("p", { class: "error", text: err.message })); }
  };
  form.addEventListener("submit", (e) => { e.preventDefault(); load(); });
  box.replaceChildren(form, out);
  await load();
}

// Models: the catalog, and each model's deployments with whether each is up (its circuit breaker,
// as the answering gateway process sees it).
async function models() {
  const box = current;
  const list = (await api("GET", "/v1/models?deployments=true")).data;
  const deployment = (d) => h("li", { class: `deployment ${d.state}`, "data-deployment": d.name, "data-state": d.state }, `${d.name} (${d.backend}): ${d.state}`);
  box.replaceChildren(h("table", { id: "models" },
    h("tr", {}, ["model", "type", "context", "max output", "USD / M in", "cached", "out", "capabilities", "up", "deployments"].map((t) => h("th", { text: t }))),
    list.map((m) => h("tr", { "data-model": m.id },
      h("td", { text: m.id }), h("td", { text: m.type }), h("td", { text: num(m.context_window) }), h("td", { text: m.max_output_tokens ? num(m.max_output_tokens) : "—" }),
      h("td", { text: m.pricing.input_usd_per_million }), h("td", { text: m.pricing.cached_input_usd_per_million ?? "—" }), h("td", { text: m.pricing.output_usd_per_million }),
      h("td", { text: Object.entries(m.capabilities || {}).filter(([, v]) => v === true).map(([k]) => k).join(" ") }),
      h("td", { class: "model-up", text: m.active && (m.deployments || []).some((d) => d.up) ? "up" : "down" }),
      h("td", {}, h("ul", { class: "deployments" }, (m.deployments || []).map(deployment)))))));
}

// Playground: a streamed chat completion with the session's API key (or one given for the session).
async function playground() {
  const box = current;
  const useKeyHeader = me.kind === "management" ? { "x-console-key": "playground" } : {};
  const keyBox = h("div", { id: "playground-key" });
  const hasKey = me.kind !== "management" || me.playground_key;
  let allowed = null; // the models the playground's key may call (null: all)
  if (hasKey) allowed = (await api("GET", "/v1/key", undefined, useKeyHeader)).data.models;
  const catalog = (await api("GET", "/v1/models")).data.filter((m) => m.type !== "embedding" && m.active &&
    (!allowed || allowed.includes(m.id) || (m.aliases || []).some((a) => allowed.includes(a))));
  if (!hasKey) {
    const pasted = h("input", { type: "password", id: "use-key", placeholder: "gw-… an API key of this account", autocomplete: "off" });
    keyBox.replaceChildren(h("p", { class: "card" }, "A management key cannot call models. ",
      h("button", { type: "button", id: "make-session-key", onclick: makeSessionKey, text: "Make an API key for this session" }),
      " or use one: ", pasted, " ", h("button", { type: "button", onclick: () => useSessionKey(pasted.value), text: "Use" })));
  }
  const form = h("form", { class: "card", id: "play" },
    h("div", { class: "row" },
      h("label", {}, "model", h("select", { name: "model", id: "play-model" }, catalog.map((m) => h("option", { value: m.id, text: m.id })))),
      h("label", {}, "temperature", h("input", { name: "temperature", type: "number", step: "0.1", min: "0", max: "2", value: "1" })),
      h("label", {}, "top_p", h("input", { name: "top_p", type: "number", step: "0.05", min: "0", max: "1", value: "1" })),
      h("label", {}, "max tokens", h("input", { name: "max_tokens", type: "number", min: "1", value: "256" })),
      h("label", {}, h("span", {}, h("input", { type: "checkbox", name: "json" }), " JSON schema output")),
      h("label", {}, h("span", {}, h("input", { type: "checkbox", name: "tools" }), " tools"))),
    h("label", {}, "system prompt", h("textarea", { name: "system", rows: 2 })),
    h("label", {}, "message", h("textarea", { name: "message", id: "play-message", rows: 4 })),
    h("div", { class: "row" }, h("button", { type: "submit", id: "play-send", text: "Send" }), h("button", { type: "button", id: "view-code", text: "View code" })));
  const reasoning = h("div", { id: "reasoning" });
  const answer = h("div", { id: "answer" });
  const usage = h("div", { id: "play-usage", class: "muted" });
  const code = h("div", { id: "code" });
  const body = () => {
    const f = new FormData(form);
    const messages = [];
    if (f.get("system")) messages.push({ role: "system", content: f.get("system") });
    messages.push({ role: "user", content: f.get("message") });
    const b = { model: f.get("model"), messages, temperature: Number(f.get("temperature")), top_p: Number(f.get("top_p")), max_tokens: Number(f.get("max_tokens")), stream: true, stream_options: { include_usage: true } };
    if (f.get("json")) b.response_format = { type: "json_schema", json_schema: { name: "answer", schema: { type: "object", properties: { answer: { type: "string" } }, required: ["answer"] } } };
    if (f.get("tools")) b.tools = [{ type: "function", function: { name: "get_weather", description: "The weather in a city.", parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] } } }];
    return b;
  };
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    answer.textContent = ""; reasoning.textContent = ""; usage.textContent = "";
    const res = await fetch("/ui/api/v1/chat/completions", { method: "POST", credentials: "same-origin",
      headers: { "content-type": "application/json", "x-csrf-token": me.csrf, ...useKeyHeader }, body: JSON.stringify(body()) });
    if (!res.ok) { const d = await res.json().catch(() => ({})); answer.replaceChildren(h("span", { class: "error", text: (d.error && d.error.message) || `HTTP ${res.status}` })); return; }
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    const tools = [];
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
          const chunk = JSON.parse(line.slice(6));
          for (const choice of chunk.choices || []) {
            const d = choice.delta || {};
            if (d.reasoning_content) reasoning.textContent += d.reasoning_content;
            if (d.content) answer.textContent += d.content;
            for (const t of d.tool_calls || []) tools.push(t);
          }
          if (chunk.usage) {
            const u = chunk.usage;
            const credits = chunk.meta && chunk.meta.usage ? chunk.meta.usage.credits_used : undefined;
            const reasoningTokens = (u.completion_tokens_details || {}).reasoning_tokens || 0;
            usage.textContent = `tokens in ${num(u.prompt_tokens)}, out ${num(u.completion_tokens)} (reasoning ${num(reasoningTokens)})` + (credits !== undefined ? `, ${num(credits)} credits (${usd(credits)})` : "");
          }
        }
      }
    }
    if (tools.length) answer.append(h("pre", { text: "tool calls: " + JSON.stringify(tools, null, 1) }));
    if (!/credits/.test(usage.textContent)) await creditsOfLastCall(usage, useKeyHeader);
  });
  form.querySelector("#view-code").addEventListener("click", () => code.replaceChildren(viewCode(body())));
  box.replaceChildren(keyBox, form, h("div", { class: "card" }, h("h3", { text: "Reasoning" }), reasoning, h("h3", { text: "Answer" }), answer, usage), code);
}

// The call's credits, from the usage listing (the stream's usage has tokens only).
async function creditsOfLastCall(usage, headers) {
  const page = await api("GET", "/v1/billing/usage?limit=1", undefined, headers);
  const r = page.data[0];
  if (r) usage.textContent += `; ${num(r.credits)} credits (${usd(r.credits)}), request ${r.request_id}`;
}

async function makeSessionKey() {
  const made = (await api("POST", "/v1/keys", { name: `console session ${new Date().toISOString().slice(0, 16)}`, scopes: ["model:chat"] })).data;
  await useSessionKey(made.key);
}

// The playground's key is kept on the server for this session (checked to be an API key of the account).
async function useSessionKey(key) {
  const res = await fetch("/ui/session/playground-key", { method: "POST", credentials: "same-origin", headers: { "content-type": "application/json", "x-csrf-token": me.csrf }, body: JSON.stringify({ key }) });
  if (!res.ok) {
    const d = await res.json().catch(() => ({}));
    current.prepend(h("p", { class: "error", text: (d.error && d.error.message) || "That key cannot be used." }));
    return;
  }
  await loadSession();
  await playground();
}

function viewCode(b) {
  const base = location.origin;
  const { stream_options, ...plain } = b;
  const curl = `curl ${base}/v1/chat/completions \\\n  -H "Authorization: Bearer $GATEWRIGHT_API_KEY" \\\n  -H "Content-Type: application/json" \\\n  -d '${JSON.stringify(b)}'`;
  const py = `from openai import OpenAI\n\nclient = OpenAI(base_url="${base}/v1", api_key=os.environ["GATEWRIGHT_API_KEY"])\nstream = client.chat.completions.create(**${JSON.stringify(b, null, 2).replace(/true/g, "True").replace(/false/g, "False").replace(/null/g, "None")})\nfor chunk in stream:\n    if chunk.choices and chunk.choices[0].delta.content:\n        print(chunk.choices[0].delta.content, end="")`;
  const { stream, ...taskBody } = plain;
  const task = `curl ${base}/v1/tasks \\\n  -H "Authorization: Bearer $GATEWRIGHT_API_KEY" \\\n  -H "Content-Type: application/json" \\\n  -d '${JSON.stringify([{ taskType: "textInference", taskUUID: "00000000-0000-4000-8000-000000000000", ...taskBody }])}'`;
  return h("div", { class: "card" },
    h("h3", { text: "curl" }), h("pre", { id: "code-curl", text: curl }),
    h("h3", { text: "Python (openai SDK)" }), h("pre", { id: "code-python", text: "import os\n" + py }),
    h("h3", { text: "Task API" }), h("pre", { id: "code-task", text: task }));
}

// -- operator pages (the operator's API, /v1/admin/…) --------------------------------------------

async function accountsPage() {
  const box = current;
  const list = (await api("GET", "/v1/admin/accounts")).data;
  const made = h("div", { id: "created-account" });
  const form = h("form", { class: "card", id: "create-account" },
    h("h2", { text: "Create an account" }),
    h("div", { class: "row" },
      h("label", {}, "name", h("input", { name: "name", id: "new-account-name", required: true })),
      h("label", {}, "email", h("input", { name: "email", type: "email" })),
      h("label", {}, "starting credits", h("input", { name: "credits", type: "number", min: "0", value: "0" })),
      h("button", { type: "submit", text: "Create" })),
    made);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = new FormData(form);
    try {
      const account = await api("POST", "/v1/admin/accounts", { name: f.get("name"), email: f.get("email") || undefined, credits: Number(f.get("credits") || 0) });
      await accountsPage();
      $("#created-account").replaceChildren(h("p", {}, `Account ${account.id} made. Its management key (shown once): `,
        h("code", { class: "secret", id: "new-account-key", text: account.management_key }), " ",
        h("button", { type: "button", onclick: () => navigator.clipboard.writeText(account.management_key), text: "Copy" })));
    } catch (err) { made.replaceChildren(h("p", { class: "error", text: err.message })); }
  });
  box.replaceChildren(form, h("table", { id: "accounts" },
    h("tr", {}, ["id", "name", "email", "state", "balance (credits)", "USD", "reserved", "spent", "created", ""].map((t) => h("th", { text: t }))),
    list.map((a) => h("tr", { "data-account": a.id },
      h("td", { text: a.id }), h("td", { text: a.name }), h("td", { text: a.email || "—" }), h("td", { class: "account-state", text: a.disabled ? "disabled" : "active" }),
      h("td", { class: "account-balance", text: num(a.balance) }), h("td", { text: usd(a.balance) }), h("td", { text: num(a.reserved) }), h("td", { text: num(a.spent) }),
      h("td", { text: a.created_at.replace("T", " ").slice(0, 19) }),
      h("td", {},
        h("button", { type: "button", class: "grant", onclick: () => grantCredits(a), text: "Grant credits" }), " ",
        h("button", { type: "button", class: "toggle", onclick: () => setAccountDisabled(a, !a.disabled), text: a.disabled ? "Enable" : "Disable" }))))));
}

async function grantCredits(a) {
  const amount = prompt(`Credits to grant to ${a.name} (negative removes)`, "1000000");
  if (amount === null || !amount.trim()) return;
  const note = prompt("Note for the ledger", "granted in the console");
  if (note === null) return;
  await api("POST", `/v1/admin/accounts/${a.id}/credits`, { credits: Math.trunc(Number(amount)), note: note || undefined });
  await accountsPage();
}

async function setAccountDisabled(a, disabled) {
  if (disabled && !confirm(`Disable account ${a.name}? Its keys stop working until it is enabled.`)) return;
  await api("PATCH", `/v1/admin/accounts/${a.id}`, { disabled });
  await accountsPage();
}

async function codesPage() {
  const box = current;
  const list = (await api("GET", "/v1/admin/codes?limit=200")).data;
  const minted = h("div", { id: "minted" });
  const form = h("form", { class: "card", id: "mint-codes" },
    h("h2", { text: "Mint redemption codes" }),
    h("div", { class: "row" },
      h("label", {}, "USD each", h("input", { name: "usd", type: "number", step: "any", min: "0", required: true })),
      h("label", {}, "how many", h("input", { name: "count", type: "number", min: "1", max: "1000", value: "1" })),
      h("label", {}, "expires", h("input", { name: "expires", type: "date" })),
      h("label", {}, "note", h("input", { name: "note" })),
      h("button", { type: "submit", text: "Mint" })),
    minted);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = new FormData(form);
    const body = { usd: Number(f.get("usd")), count: Number(f.get("count") || 1), note: f.get("note") || undefined };
    if (f.get("expires")) body.expires_at = Math.floor(new Date(f.get("expires")).getTime() / 1000);
    try {
      const codes = (await api("POST", "/v1/admin/codes", body)).data;
      await codesPage();
      $("#minted").replaceChildren(h("p", { text: "The codes (shown once):" }), h("pre", { id: "minted-codes", text: codes.map((c) => c.code).join("\n") }));
    } catch (err) { minted.replaceChildren(h("p", { class: "error", text: err.message })); }
  });
  box.replaceChildren(form, h("table", { id: "codes" },
    h("tr", {}, ["prefix", "credits", "USD", "note", "created", "expires", "state", "redeemed by"].map((t) => h("th", { text: t }))),
    list.map((c) => h("tr", {},
      h("td", { text: c.prefix }), h("td", { text: num(c.credits) }), h("td", { text: usd(c.credits) }), h("td", { text: c.note || "—" }),
      h("td", { text: c.created_at.replace("T", " ").slice(0, 19) }), h("td", { text: c.expires_at ? c.expires_at.slice(0, 10) : "never" }),
      h("td", { text: c.redeemed_at ? `spent ${c.redeemed_at.replace("T", " ").slice(0, 19)}` : "unspent" }),
      h("td", { text: c.redeemed_by ?? "—" })))));
}

async function allUsagePage() {
  const box = current;
  const page = await api("GET", "/v1/admin/usage?limit=1000");
  const total = page.data.reduce((t, b) => ({ requests: t.requests + b.requests, credits: t.credits + b.credits }), { requests: 0, credits: 0 });
  box.replaceChildren(
    h("p", { class: "muted", text: `${page.since.slice(0, 10)} to ${page.until.slice(0, 10)}: ${num(total.requests)} requests, ${num(total.credits)} credits (${usd(total.credits)})` + (page.has_more ? " (first 1000 rows)" : "") }),
    h("table", { id: "all-usage" },
      h("tr", {}, ["day", "account", "model", "key", "requests", "tokens in", "tokens out", "credits", "USD"].map((t) => h("th", { text: t }))),
      page.data.map((b) => h("tr", {},
        h("td", { text: b.day }), h("td", { text: b.account_id }), h("td", { text: b.model }), h("td", { text: b.key_prefix }),
        h("td", { text: num(b.requests) }), h("td", { text: num(b.input_tokens) }), h("td", { text: num(b.output_tokens) }),
        h("td", { text: num(b.credits) }), h("td", { text: usd(b.credits) })))));
}

// -- start ---------------------------------------------------------------------------------------
$("#sign-in").addEventListener("submit", signIn);
$("#sign-out").addEventListener("click", signOut);
window.addEventListener("hashchange", route);
await loadSession();
route();
