// The web UI: one page, hash routes, and the server's own REST API called with the user's
// bearer token (kept in sessionStorage only). Every permission check and validation message
// is the API's; the page only hides controls the signed-in principal could not use anyway.

const TOKEN_KEY = "ai_query.token";
const main = document.getElementById("main");
let me = null;        // the signed-in principal (GET /api/ui/me)
let cleanup = [];     // timers of the current view

// ---------- small helpers ----------

/** Build an element: h("div", {class: "x", onclick: f}, "text", child, ...). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "value") el.value = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Append to the page, skipping the absent (``null``) parts. */
function add(...nodes) { main.append(...nodes.filter((n) => n !== null && n !== undefined && n !== false)); }

function show(...nodes) {
  for (const stop of cleanup) stop();
  cleanup = [];
  main.replaceChildren(...nodes);
}

class APIError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

function headers(extra = {}) {
  const out = { ...extra };
  if (token()) out.Authorization = `Bearer ${token()}`;
  return out;
}

/** Call the API; answer its JSON, or throw an APIError carrying the API's own message. */
async function api(path, { method = "GET", body } = {}) {
  const init = { method, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }) };
  if (body !== undefined) init.body = typeof body === "string" ? body : JSON.stringify(body);
  const resp = await fetch(path, init);
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!resp.ok) throw new APIError(resp.status, errorMessage(data, resp));
  return data;
}

function errorMessage(data, resp) {
  if (data && typeof data === "object") {
    if (data.message) return `${resp.status} ${data.error_code || ""}: ${data.message}`;
    if (data.error && data.error.message) return `${resp.status}: ${data.error.message}`;
  }
  return `${resp.status} ${resp.statusText}`;
}

function errorBox(id = "error") { return h("div", { class: "error", id, role: "alert" }); }

function fail(box, err) { box.textContent = err.message || String(err); }

function stateOf(ep) {
  if (ep.state.config_update === "IN_PROGRESS") return "updating";
  return ep.state.ready;
}

function stateLabel(ep) {
  const s = stateOf(ep);
  const text = { READY: "Ready", NOT_READY: "Not ready", updating: "Updating" }[s] || s;
  return h("span", { class: `state-${s}` }, text);
}

function levelCovers(level, needed) {
  const rank = { CAN_VIEW: 1, CAN_QUERY: 2, CAN_MANAGE: 3 };
  return (rank[level] || 0) >= rank[needed];
}

function entitiesOf(ep) {
  const config = ep.config || ep.pending_config || { served_entities: [] };
  return config.served_entities;
}

function taskOf(ep) {
  return ep.task || (entitiesOf(ep)[0] || {}).task ||
    ((entitiesOf(ep)[0] || {}).external_model || {}).task || "llm/v1/chat";
}

function tagList(tags) {
  return (tags || []).map((t) => h("span", { class: "tag" }, t.value ? `${t.key}: ${t.value}` : t.key));
}

// ---------- sign-in ----------

function signInView(message = "") {
  const input = h("input", { id: "token", type: "password", autocomplete: "off", placeholder: "dapi..." });
  const box = errorBox();
  box.textContent = message;
  const form = h("form", { class: "card", id: "signin", onsubmit: async (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    try { await signIn(); location.hash = "#/endpoints"; route(); } catch (err) { fail(box, err); }
  } },
  h("h1", {}, "Sign in"),
  h("p", { class: "muted" }, "Paste a personal access token. It stays in this browser tab only."),
  h("label", { for: "token" }, "Token"), input,
  h("button", { type: "submit" }, "Sign in"), box);
  show(form);
}

async function signIn() {
  try {
    me = await api("/api/ui/me");
  } catch (err) {
    sessionStorage.removeItem(TOKEN_KEY);
    me = null;
    throw err;
  }
  document.getElementById("who").textContent = `${me.name}${me.is_admin ? " (admin)" : ""}`;
  document.getElementById("nav").hidden = false;
  document.getElementById("nav-sql").hidden = !me.sql_editor;
  document.getElementById("nav-jobs").hidden = !me.jobs;
  document.getElementById("signout").hidden = false;
}

document.getElementById("signout").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  me = null;
  document.getElementById("who").textContent = "";
  document.getElementById("nav").hidden = true;
  document.getElementById("signout").hidden = true;
  location.hash = "#/";
  signInView();
});

// ---------- endpoints list ----------

async function listView() {
  const box = errorBox();
  const body = h("tbody");
  show(h("h1", {}, "Serving endpoints"),
    me.may_create ? h("button", { id: "create", onclick: () => { location.hash = "#/create"; } }, "Create serving endpoint") : null,
    box,
    h("table", { id: "endpoints" }, h("thead", {}, h("tr", {},
      ...["Name", "State", "Task", "Served entities", "Tags", "Your permission"].map((t) => h("th", {}, t)))), body));
  try {
    const data = await api("/api/2.0/serving-endpoints");
    for (const ep of data.endpoints) {
      body.append(h("tr", { "data-endpoint": ep.name },
        h("td", {}, h("a", { href: `#/endpoints/${encodeURIComponent(ep.name)}` }, ep.name)),
        h("td", {}, stateLabel(ep)),
        h("td", {}, taskOf(ep)),
        h("td", {}, entitiesOf(ep).map((e) => e.name).join(", ")),
        h("td", {}, tagList(ep.tags)),
        h("td", {}, ep.permission_level)));
    }
  } catch (err) { fail(box, err); }
}

// ---------- one endpoint ----------

async function endpointView(name) {
  const box = errorBox();
  show(h("h1", {}, name), box);
  let ep;
  try { ep = await api(`/api/2.0/serving-endpoints/${encodeURIComponent(name)}`); } catch (err) { fail(box, err); return; }
  const manage = levelCovers(ep.permission_level, "CAN_MANAGE");
  const query = levelCovers(ep.permission_level, "CAN_QUERY");
  const config = ep.config || ep.pending_config;
  const entities = h("tbody", {}, entitiesOf(ep).map((e) => h("tr", {},
    h("td", {}, e.name),
    h("td", {}, e.external_model ? `${e.external_model.provider}: ${e.external_model.name}` : (e.entity_name || "")),
    h("td", {}, e.state ? e.state.deployment : ""),
    h("td", {}, e.state ? e.state.deployment_state_message : ""))));
  const routes = ((config && config.traffic_config) || { routes: [] }).routes;
  const controls = h("div", { id: "controls" },
    query ? h("button", { id: "query", onclick: () => { location.hash = `#/endpoints/${encodeURIComponent(name)}/query`; } }, "Query endpoint") : null,
    manage ? h("button", { id: "edit", class: "secondary", onclick: () => editForm(ep, editArea) }, "Edit") : null,
    manage ? h("button", { id: "delete", class: "danger", onclick: async () => {
      if (!confirm(`Delete ${name}?`)) return;
      try { await api(`/api/2.0/serving-endpoints/${encodeURIComponent(name)}`, { method: "DELETE" }); location.hash = "#/endpoints"; }
      catch (err) { fail(box, err); }
    } }, "Delete") : null);
  const editArea = h("div", { id: "edit-area" });
  const charts = h("div", { class: "row", id: "charts" });
  add(
    h("p", {}, "State: ", stateLabel(ep), " · Task: ", taskOf(ep), " · Your permission: ",
      h("strong", { id: "permission" }, ep.permission_level), ep.description ? ` · ${ep.description}` : ""),
    ep.state.config_update_message ? h("p", { class: "error" }, ep.state.config_update_message) : null,
    controls, editArea,
    h("h2", {}, "Metrics (last minutes)"), charts,
    h("h2", {}, "Served entities"),
    h("table", {}, h("thead", {}, h("tr", {}, ...["Name", "Model", "Deployment", "Message"].map((t) => h("th", {}, t)))), entities),
    h("h2", {}, "Traffic"),
    h("table", { id: "traffic" }, h("tbody", {}, routes.map((r) => h("tr", {},
      h("td", {}, r.served_model_name || r.served_entity_name), h("td", {}, `${r.traffic_percentage}%`))))),
    h("h2", {}, "Rate limits"),
    h("p", { id: "rate-limits" }, ep.rate_limits.length ? ep.rate_limits.map((r) =>
      `${r.calls ? r.calls + " calls" : ""}${r.tokens ? " " + r.tokens + " tokens" : ""} per ${r.renewal_period} per ${r.key}`).join("; ") : "none"),
    h("h2", {}, "Tags"), h("p", {}, ep.tags.length ? tagList(ep.tags) : "none"),
    h("h2", {}, "Configuration"), h("pre", { id: "config" }, JSON.stringify(config, null, 2)));
  if (manage) add(await permissionsCard(ep));
  startCharts(name, charts);
}

async function permissionsCard(ep) {
  const box = errorBox("perm-error");
  const body = h("tbody");
  const card = h("div", { class: "card", id: "permissions" }, h("h2", {}, "Permissions"),
    h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Principal"), h("th", {}, "Level"))), body));
  const fill = (acl) => body.replaceChildren(...acl.access_control_list.map((a) => h("tr", {},
    h("td", {}, a.user_name || a.group_name || a.service_principal_name),
    h("td", {}, a.all_permissions.map((p) => p.permission_level).join(", ")))));
  const path = `/api/2.0/permissions/serving-endpoints/${encodeURIComponent(ep.id)}`;
  try { fill(await api(path)); } catch (err) { fail(box, err); }
  const kind = h("select", { id: "grant-kind" }, ["user_name", "group_name", "service_principal_name"].map((k) => h("option", { value: k }, k)));
  const who = h("input", { id: "grant-name", placeholder: "name" });
  const level = h("select", { id: "grant-level" }, ["CAN_VIEW", "CAN_QUERY", "CAN_MANAGE"].map((k) => h("option", { value: k }, k)));
  card.append(h("div", { class: "row" }, kind, who, level),
    h("button", { id: "grant", onclick: async () => {
      try { fill(await api(path, { method: "PATCH", body: { access_control_list: [{ [kind.value]: who.value, permission_level: level.value }] } })); box.textContent = ""; }
      catch (err) { fail(box, err); }
    } }, "Grant"), box);
  return card;
}

function editForm(ep, area) {
  const config = ep.pending_config || ep.config;
  const editable = { served_entities: config.served_entities.map(({ state, creator, creation_timestamp, ...rest }) => rest), traffic_config: config.traffic_config };
  const text = h("textarea", { id: "edit-config", rows: 14 }, JSON.stringify(editable, null, 2));
  const limits = h("input", { id: "edit-calls", type: "number", min: 1, value: (ep.rate_limits.find((r) => r.calls) || {}).calls || "" });
  const box = errorBox("edit-error");
  const name = encodeURIComponent(ep.name);
  area.replaceChildren(h("div", { class: "card" }, h("h2", {}, "Edit"),
    h("label", { for: "edit-config" }, "Config (served entities and traffic)"), text,
    h("label", { for: "edit-calls" }, "Rate limit: calls per minute for the endpoint (empty: none)"), limits,
    h("button", { id: "save", onclick: async () => {
      try {
        let body;
        try { body = JSON.parse(text.value); } catch (err) { throw new Error(`config is not JSON: ${err.message}`); }
        await api(`/api/2.0/serving-endpoints/${name}/config`, { method: "PUT", body });
        const rate = limits.value ? [{ calls: Number(limits.value), key: "endpoint", renewal_period: "minute" }] : [];
        await api(`/api/2.0/serving-endpoints/${name}/rate-limits`, { method: "PUT", body: { rate_limits: rate } });
        route();
      } catch (err) { fail(box, err); }
    } }, "Save"),
    h("button", { class: "secondary", id: "cancel-edit", onclick: () => area.replaceChildren() }, "Cancel"), box));
}

// ---------- live charts from /api/ui/metrics ----------

function startCharts(name, container) {
  const specs = [
    { id: "rps", title: "Requests/s", unit: "" },
    { id: "tps", title: "Tokens/s", unit: "" },
    { id: "latency", title: "Latency p50 / p99", unit: " s" },
    { id: "errors", title: "Errors/s", unit: "" },
  ];
  const points = Object.fromEntries(specs.map((s) => [s.id, []]));
  const cells = Object.fromEntries(specs.map((s) => {
    const value = h("span", { class: "value" }, "–");
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("viewBox", "0 0 300 60");
    svg.setAttribute("preserveAspectRatio", "none");
    container.append(h("div", { class: "chart", id: `chart-${s.id}` }, h("div", {}, s.title, ": ", value), svg));
    return [s.id, { value, svg, unit: s.unit }];
  }));
  let last = null;
  const poll = async () => {
    let now;
    try { now = await api(`/api/ui/metrics/${encodeURIComponent(name)}`); } catch { return; }
    if (last) {
      const dt = Math.max(now.time - last.time, 1e-3);
      const sum = (o) => Object.values(o).reduce((a, b) => a + b, 0);
      const errs = (o) => Object.entries(o).filter(([s]) => Number(s) >= 400).reduce((a, [, v]) => a + v, 0);
      const q = (p) => quantile(last.latency.buckets, now.latency.buckets, now.latency.count - last.latency.count, p);
      push(points.rps, (sum(now.requests) - sum(last.requests)) / dt);
      push(points.tps, (sum(now.tokens) - sum(last.tokens)) / dt);
      push(points.errors, (errs(now.requests) - errs(last.requests)) / dt);
      push(points.latency, [q(0.5), q(0.99)]);
      for (const [id, cell] of Object.entries(cells)) draw(cell, points[id]);
    }
    last = now;
  };
  poll();
  const timer = setInterval(poll, 2000);
  cleanup.push(() => clearInterval(timer));
}

function push(series, value) {
  series.push(value);
  if (series.length > 150) series.shift();  // 5 minutes at one sample per 2 s
}

/** The p-quantile of the latencies observed between two cumulative histograms. */
function quantile(before, after, count, p) {
  if (count <= 0) return 0;
  const old = Object.fromEntries(before.map(([le, n]) => [le, n]));
  for (const [le, n] of after) {
    if (n - (old[le] || 0) >= p * count) return le;
  }
  return after.length ? after[after.length - 1][0] : 0;
}

function draw(cell, series) {
  const lines = Array.isArray(series[0]) ? [series.map((v) => v[0]), series.map((v) => v[1])] : [series];
  const max = Math.max(1e-9, ...lines.flat());
  const latest = series[series.length - 1];
  const fmt = (v) => (v >= 10 ? v.toFixed(0) : v.toFixed(2));
  cell.value.textContent = Array.isArray(latest) ? latest.map(fmt).join(" / ") + cell.unit : fmt(latest) + cell.unit;
  cell.svg.replaceChildren(...lines.map((line, i) => {
    const poly = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    const step = 300 / Math.max(1, line.length - 1);
    poly.setAttribute("points", line.map((v, j) => `${(j * step).toFixed(1)},${(58 - (v / max) * 54).toFixed(1)}`).join(" "));
    poly.setAttribute("fill", "none");
    poly.setAttribute("stroke", i ? "#b54708" : "#1570ef");
    poly.setAttribute("stroke-width", "2");
    return poly;
  }));
}

// ---------- create ----------

function createView() {
  const box = errorBox("form-error");
  const field = (id, label, input) => [h("label", { for: id }, label), input];
  const name = h("input", { id: "ep-name", required: true });
  const entity = h("input", { id: "entity-name", value: "main" });
  const task = h("select", { id: "task" }, ["llm/v1/chat", "llm/v1/completions", "llm/v1/embeddings"].map((t) => h("option", { value: t }, t)));
  const kind = h("select", { id: "kind", onchange: () => { local.hidden = kind.value !== "local"; external.hidden = kind.value === "local"; } },
    h("option", { value: "local" }, "Model served here"), h("option", { value: "external" }, "External model (OpenAI-compatible)"));
  const model = h("input", { id: "entity-model", placeholder: "e.g. smollm2-135m-instruct" });
  const extName = h("input", { id: "ext-name", placeholder: "model name at the provider" });
  const extBase = h("input", { id: "ext-base", placeholder: "https://api.openai.com/v1" });
  const scope = h("select", { id: "secret-scope" }, me.secret_scopes.map((s) => h("option", { value: s }, s)));
  const key = h("input", { id: "secret-key", placeholder: "key name in the scope" });
  const local = h("div", {}, field("entity-model", "Model", model));
  const external = h("div", { hidden: true }, field("ext-name", "Provider model", extName), field("ext-base", "API base", extBase),
    h("label", { for: "secret-scope" }, "API key: secret reference (never the key itself)"),
    h("div", { class: "row" }, scope, key),
    me.secret_scopes.length ? null : h("p", { class: "muted" }, "You have no secret scopes; ask an admin."));
  const calls = h("input", { id: "calls", type: "number", min: 1 });
  const tags = h("input", { id: "tags", placeholder: "team=search, env=dev" });
  const form = h("form", { class: "card", id: "create-form", onsubmit: async (e) => {
    e.preventDefault();
    const served = { name: entity.value || undefined, task: task.value };
    if (kind.value === "local") served.entity_name = model.value || undefined;
    else {
      const config = { openai_api_key: `{{secrets/${scope.value}/${key.value}}}` };
      if (extBase.value) config.openai_api_base = extBase.value;
      served.external_model = { name: extName.value, provider: "openai", task: task.value, openai_config: config };
    }
    const body = { name: name.value, config: { served_entities: [served] } };
    if (calls.value) body.rate_limits = [{ calls: Number(calls.value), key: "endpoint", renewal_period: "minute" }];
    if (tags.value.trim()) body.tags = tags.value.split(",").map((t) => t.trim()).filter(Boolean).map((t) => {
      const [k, ...v] = t.split("=");
      return v.length ? { key: k.trim(), value: v.join("=").trim() } : { key: k.trim() };
    });
    try {
      await api("/api/2.0/serving-endpoints", { method: "POST", body });
      location.hash = `#/endpoints/${encodeURIComponent(name.value)}`;
    } catch (err) { fail(box, err); }
  } },
  h("h1", {}, "Create serving endpoint"),
  field("ep-name", "Name", name), field("entity-name", "Served entity name", entity),
  field("task", "Task", task), field("kind", "Served entity", kind), local, external,
  field("calls", "Rate limit: calls per minute (optional)", calls), field("tags", "Tags (optional)", tags),
  h("button", { type: "submit", id: "submit-create" }, "Create"), box);
  show(form);
}

// ---------- query endpoint ----------

function exampleFor(task) {
  if (task.includes("embeddings")) return { input: ["What is Apache Spark?"] };
  if (task.includes("completions")) return { prompt: "Apache Spark is", max_tokens: 64 };
  return { messages: [{ role: "user", content: "What is Apache Spark?" }], max_tokens: 64 };
}

function snippets(name, task, body) {
  const origin = location.origin;
  const json = JSON.stringify(body);
  const curl = `curl -X POST ${origin}/serving-endpoints/${name}/invocations \\\n  -H "Authorization: Bearer $DATABRICKS_TOKEN" \\\n  -H "Content-Type: application/json" \\\n  -d '${json.replaceAll("'", "'\\''")}'`;
  const call = task.includes("embeddings") ? "embeddings.create" : task.includes("completions") ? "completions.create" : "chat.completions.create";
  const args = Object.entries(body).map(([k, v]) => `    ${k}=${JSON.stringify(v)},`).join("\n");
  const openai = `import os\nfrom openai import OpenAI\n\nclient = OpenAI(base_url="${origin}/v1", api_key=os.environ["DATABRICKS_TOKEN"])\nanswer = client.${call}(\n    model="${name}",\n${args}\n)\nprint(answer)`;
  const messages = body.messages || [];
  const text = body.prompt || (body.input && body.input[0]) || (messages.length ? messages[messages.length - 1].content : "");
  const params = Object.entries(body).filter(([k, v]) => ["max_tokens", "temperature", "top_p"].includes(k) && typeof v === "number");
  const sqlText = String(text).replaceAll("'", "''");
  const sqlParams = params.length ? `,\n  modelParameters => named_struct(${params.map(([k, v]) => `'${k}', ${v}`).join(", ")})` : "";
  const sql = `SELECT ai_query(\n  '${name}',\n  '${sqlText}'${sqlParams}\n) AS answer`;
  return { curl, openai, sql };
}

async function queryView(name) {
  const box = errorBox();
  show(h("h1", {}, `Query endpoint: ${name}`), box);
  let ep;
  try { ep = await api(`/api/2.0/serving-endpoints/${encodeURIComponent(name)}`); } catch (err) { fail(box, err); return; }
  const task = taskOf(ep);
  const editor = h("textarea", { id: "request", rows: 12 }, JSON.stringify(exampleFor(task), null, 2));
  const status = h("p", { id: "response-status", class: "muted" });
  const output = h("pre", { id: "response" });
  const snippetBox = h("pre", { id: "snippet" });
  let which = "curl";
  const renderSnippet = () => {
    let body;
    try { body = JSON.parse(editor.value); } catch { snippetBox.textContent = "(the request is not JSON)"; return; }
    snippetBox.textContent = snippets(name, task, body)[which];
  };
  editor.addEventListener("input", renderSnippet);
  const tab = (id, label) => h("button", { class: "secondary", id: `snippet-${id}`, onclick: () => { which = id; renderSnippet(); } }, label);
  add(h("div", { class: "row" },
    h("div", {}, h("label", { for: "request" }, `Request (${task})`), editor,
      h("button", { id: "send", onclick: async () => {
        box.textContent = "";
        let body;
        try { body = JSON.parse(editor.value); } catch (err) { box.textContent = `request is not JSON: ${err.message}`; return; }
        status.textContent = "sending...";
        const started = performance.now();
        const resp = await fetch(`/serving-endpoints/${encodeURIComponent(name)}/invocations`, {
          method: "POST", headers: headers({ "Content-Type": "application/json" }), body: JSON.stringify(body) });
        const ms = performance.now() - started;
        const text = await resp.text();
        let data = text;
        try { data = JSON.parse(text); } catch { /* shown as text */ }
        const usage = (data && data.usage) || {};
        status.textContent = `Status ${resp.status} · ${ms.toFixed(0)} ms` +
          (usage.total_tokens !== undefined ? ` · tokens: ${usage.prompt_tokens || 0} prompt, ${usage.completion_tokens || 0} completion` : "");
        output.textContent = typeof data === "string" ? data : JSON.stringify(data, null, 2);
      } }, "Send request")),
    h("div", {}, h("label", {}, "Response"), status, output)),
    h("h2", {}, "Use it from code"),
    h("div", { class: "tabs" }, tab("curl", "curl"), tab("openai", "Python (openai)"), tab("sql", "SQL (ai_query)"),
      h("button", { id: "copy", onclick: () => navigator.clipboard.writeText(snippetBox.textContent) }, "Copy")),
    snippetBox);
  renderSnippet();
}

// ---------- playground ----------

async function playgroundView() {
  const box = errorBox();
  show(h("h1", {}, "AI Playground"), box);
  let chat = [];
  try {
    const data = await api("/api/2.0/serving-endpoints");
    chat = data.endpoints.filter((e) => levelCovers(e.permission_level, "CAN_QUERY") && taskOf(e).includes("chat")).map((e) => e.name);
  } catch (err) { fail(box, err); return; }
  const pick = (i) => h("select", { id: `pg-model-${i}` }, i > 1 ? h("option", { value: "" }, "(none)") : null,
    chat.map((n) => h("option", { value: n }, n)));
  const models = [pick(1), pick(2), pick(3)];
  const system = h("textarea", { id: "pg-system", rows: 2, placeholder: "You are a helpful assistant." });
  const temperature = h("input", { id: "pg-temperature", type: "number", step: "0.1", min: 0, max: 2, value: "0.7" });
  const maxTokens = h("input", { id: "pg-max-tokens", type: "number", min: 1, value: "256" });
  const prompt = h("textarea", { id: "pg-prompt", rows: 3, placeholder: "Ask something" });
  const answers = h("div", { class: "row", id: "pg-answers" });
  add(h("div", { class: "card" },
    h("label", {}, "Endpoints (up to three, side by side)"), h("div", { class: "row" }, models),
    h("div", { class: "row" }, h("div", {}, h("label", { for: "pg-temperature" }, "Temperature"), temperature),
      h("div", {}, h("label", { for: "pg-max-tokens" }, "Max tokens"), maxTokens)),
    h("label", { for: "pg-system" }, "System prompt"), system,
    h("label", { for: "pg-prompt" }, "Prompt"), prompt,
    h("button", { id: "pg-send", onclick: () => {
      const messages = [];
      if (system.value.trim()) messages.push({ role: "system", content: system.value });
      messages.push({ role: "user", content: prompt.value });
      answers.replaceChildren();
      models.map((m) => m.value).filter(Boolean).forEach((model, i) => {
        const text = h("div", { class: "answer", id: `pg-answer-${i + 1}` });
        const stats = h("p", { class: "muted", id: `pg-stats-${i + 1}` }, "streaming...");
        answers.append(h("div", {}, h("strong", {}, model), text, stats));
        streamChat(model, { messages, temperature: Number(temperature.value), max_tokens: Number(maxTokens.value) }, text, stats);
      });
    } }, "Send")), answers);
}

/** Stream one chat answer from /v1/chat/completions (server-sent events) into ``text``. */
async function streamChat(model, params, text, stats) {
  const started = performance.now();
  let first = null;
  let usage = null;
  try {
    const resp = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify({ model, ...params, stream: true, stream_options: { include_usage: true } }) });
    if (!resp.ok) { const data = await resp.json().catch(() => null); throw new APIError(resp.status, errorMessage(data, resp)); }
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data:")) continue;
          const payload = line.slice(5).trim();
          if (payload === "[DONE]") continue;
          const chunk = JSON.parse(payload);
          if (chunk.usage) usage = chunk.usage;
          const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
          if (delta && delta.content) {
            if (first === null) first = performance.now() - started;
            text.textContent += delta.content;
          }
        }
      }
    }
    const total = performance.now() - started;
    stats.textContent = `${total.toFixed(0)} ms (first token ${first === null ? "–" : first.toFixed(0)} ms)` +
      (usage ? ` · ${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion tokens` : "");
    stats.dataset.done = "true";
  } catch (err) {
    stats.textContent = "";
    stats.className = "error";
    stats.textContent = err.message;
    stats.dataset.done = "true";
  }
}

// ---------- SQL editor ----------

async function sqlView() {
  const box = errorBox();
  show(h("h1", {}, "SQL editor"), box);
  const tables = h("ul", { id: "sql-tables" });
  const refresh = async () => {
    const data = await api("/api/ui/sql/tables");
    tables.replaceChildren(...data.tables.map((t) => h("li", {}, h("code", {}, t.name), ` (${t.format}, ${t.bytes} bytes)`)));
  };
  try { await refresh(); } catch (err) { fail(box, err); return; }
  const file = h("input", { id: "sql-file", type: "file", accept: ".csv,.parquet" });
  const tableName = h("input", { id: "sql-table-name", placeholder: "table name" });
  const editor = h("textarea", { id: "sql", rows: 8 },
    "SELECT ai_query('smollm2-135m-instruct', 'Describe Apache Spark in one line.') AS answer");
  const bar = h("progress", { id: "sql-progress", hidden: true });
  const status = h("p", { id: "sql-status", class: "muted" });
  const result = h("table", { id: "sql-result" });
  const downloads = h("p", { id: "sql-downloads", hidden: true },
    h("button", { class: "secondary", id: "download-csv", onclick: () => download("csv") }, "Download CSV"),
    h("button", { class: "secondary", id: "download-parquet", onclick: () => download("parquet") }, "Download Parquet"));
  add(h("div", { class: "card" }, h("h2", {}, "Tables"), tables,
    h("div", { class: "row" }, file, tableName),
    h("button", { id: "sql-upload", class: "secondary", onclick: async () => {
      box.textContent = "";
      const picked = file.files[0];
      if (!picked) { box.textContent = "pick a CSV or Parquet file"; return; }
      const format = picked.name.toLowerCase().endsWith(".parquet") ? "parquet" : "csv";
      const name = tableName.value || picked.name.replace(/\.[^.]*$/, "").replace(/[^A-Za-z0-9_]/g, "_");
      const bytes = new Uint8Array(await picked.arrayBuffer());
      let binary = "";
      for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
      try { await api(`/api/ui/sql/tables/${encodeURIComponent(name)}`, { method: "POST", body: { format, data_base64: btoa(binary) } }); await refresh(); }
      catch (err) { fail(box, err); }
    } }, "Upload table")),
  h("div", { class: "card" }, h("label", { for: "sql" }, "Query (DuckDB SQL with ai_query and the task functions)"), editor,
    h("button", { id: "sql-run", onclick: () => runSQL(editor.value, bar, status, result, downloads, box) }, "Run"), bar, status),
  downloads, result);
}

async function runSQL(sql, bar, status, result, downloads, box) {
  box.textContent = "";
  result.replaceChildren();
  downloads.hidden = true;
  bar.hidden = false;
  bar.removeAttribute("value");
  status.textContent = "running...";
  const started = performance.now();
  try {
    const resp = await fetch("/api/ui/sql/query", { method: "POST", headers: headers({ "Content-Type": "application/json" }), body: JSON.stringify({ sql }) });
    if (!resp.ok) { const data = await resp.json().catch(() => null); throw new APIError(resp.status, errorMessage(data, resp)); }
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n")) >= 0) {
        const line = JSON.parse(buffer.slice(0, cut));
        buffer = buffer.slice(cut + 1);
        if (line.error) throw new Error(line.error);
        status.textContent = `${line.rows_answered} ai_query rows answered...`;
        if (line.columns) {
          result.append(h("thead", {}, h("tr", {}, line.columns.map((c) => h("th", {}, c)))),
            h("tbody", {}, line.rows.map((r) => h("tr", {}, r.map((v) => h("td", {}, typeof v === "object" && v !== null ? JSON.stringify(v) : v))))));
          status.textContent = `${line.row_count} rows (${line.rows_answered} ai_query rows answered) in ${(performance.now() - started).toFixed(0)} ms` +
            (line.row_count > line.rows.length ? `; showing the first ${line.rows.length}` : "");
          downloads.hidden = false;
        }
      }
    }
  } catch (err) { status.textContent = ""; fail(box, err); }
  bar.hidden = true;
}

async function download(fmt) {
  const resp = await fetch(`/api/ui/sql/result.${fmt}`, { headers: headers() });
  const url = URL.createObjectURL(await resp.blob());
  const link = h("a", { href: url, download: `result.${fmt}` });
  document.body.append(link);
  link.click();
  link.remove();
  URL.revokeObjectURL(url);
}

// ---------- jobs ----------

async function jobsView() {
  const box = errorBox();
  show(h("h1", {}, "Jobs"), box);
  let data;
  try { data = await api("/api/ui/jobs"); } catch (err) { fail(box, err); return; }
  if (!data.jobs.length) add(h("p", { class: "muted" }, "No job files in the jobs directory."));
  for (const job of data.jobs) {
    const card = h("div", { class: "card", "data-job": job.job || job.file },
      h("h2", {}, job.job || job.file),
      job.error ? h("p", { class: "error" }, job.error)
        : h("p", { class: "muted" }, `${job.file} · ${job.mode} → ${job.output} · schedule: ${job.schedule || "none"}`));
    if (job.runs.length) {
      card.append(h("table", { class: "runs" },
        h("thead", {}, h("tr", {}, ["Run", "Status", "Started", "Rows ok", "Rows failed", "Tokens", "Wall time", "Message"].map((t) => h("th", {}, t)))),
        h("tbody", {}, job.runs.map((r) => h("tr", {},
          h("td", {}, r.run_id), h("td", { class: `run-${r.status}` }, r.status), h("td", {}, r.started_at),
          h("td", {}, r.rows_ok), h("td", {}, r.rows_failed), h("td", {}, r.prompt_tokens + r.completion_tokens),
          h("td", {}, `${r.wall_seconds.toFixed(1)} s`), h("td", {}, r.message || ""))))));
    } else if (!job.error) card.append(h("p", {}, "No runs yet."));
    add(card);
  }
}

// ---------- routing ----------

async function route() {
  if (!token()) { signInView(); return; }
  if (!me) {
    try { await signIn(); } catch (err) { signInView(err.message); return; }
  }
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  if (parts[0] === "endpoints" && parts[1] && parts[2] === "query") return queryView(parts[1]);
  if (parts[0] === "endpoints" && parts[1]) return endpointView(parts[1]);
  if (parts[0] === "create") return createView();
  if (parts[0] === "playground") return playgroundView();
  if (parts[0] === "sql") return sqlView();
  if (parts[0] === "jobs") return jobsView();
  return listView();
}

window.addEventListener("hashchange", route);
route();
