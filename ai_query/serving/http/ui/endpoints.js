// Serving endpoints: the list, an endpoint's page (config, permissions, live charts, edit,
// delete) and the create form.

import { APIError, TOKEN_KEY, add, api, entitiesOf, errorBox, errorMessage, fail, h, headers, levelCovers, main, onLeave, rerender, session, show, stateLabel, stateOf, tagList, taskOf, token } from "./lib.js";

// ---------- endpoints list ----------

export async function listView() {
  const box = errorBox();
  const body = h("tbody");
  show(h("h1", {}, "Serving endpoints"),
    session.me.may_create ? h("button", { id: "create", onclick: () => { location.hash = "#/create"; } }, "Create serving endpoint") : null,
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

export async function endpointView(name) {
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
        rerender();
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
  onLeave(() => clearInterval(timer));
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

export function createView() {
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
  const scope = h("select", { id: "secret-scope" }, session.me.secret_scopes.map((s) => h("option", { value: s }, s)));
  const key = h("input", { id: "secret-key", placeholder: "key name in the scope" });
  const local = h("div", {}, field("entity-model", "Model", model));
  const external = h("div", { hidden: true }, field("ext-name", "Provider model", extName), field("ext-base", "API base", extBase),
    h("label", { for: "secret-scope" }, "API key: secret reference (never the key itself)"),
    h("div", { class: "row" }, scope, key),
    session.me.secret_scopes.length ? null : h("p", { class: "muted" }, "You have no secret scopes; ask an admin."));
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
