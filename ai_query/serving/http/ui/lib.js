// What every view of the web UI uses: a tiny DOM builder, the API call with the user's bearer
// token (kept in sessionStorage only), and readers of the API's endpoint objects.

export const TOKEN_KEY = "ai_query.token";
export const main = document.getElementById("main");
/** The signed-in principal (GET /api/ui/me), or null. */
export const session = { me: null };
let cleanup = [];     // timers of the current view

// ---------- small helpers ----------

/** Build an element: h("div", {class: "x", onclick: f}, "text", child, ...). */
export function h(tag, attrs = {}, ...children) {
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
export function add(...nodes) { main.append(...nodes.filter((n) => n !== null && n !== undefined && n !== false)); }

/** Run ``stop`` (a view's timer, say) when the page shows another view. */
export function onLeave(stop) { cleanup.push(stop); }

export function show(...nodes) {
  for (const stop of cleanup) stop();
  cleanup = [];
  main.replaceChildren(...nodes);
}

export class APIError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

export function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

export function headers(extra = {}) {
  const out = { ...extra };
  if (token()) out.Authorization = `Bearer ${token()}`;
  return out;
}

/** Call the API; answer its JSON, or throw an APIError carrying the API's own message. */
export async function api(path, { method = "GET", body } = {}) {
  const init = { method, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }) };
  if (body !== undefined) init.body = typeof body === "string" ? body : JSON.stringify(body);
  const resp = await fetch(path, init);
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!resp.ok) throw new APIError(resp.status, errorMessage(data, resp));
  return data;
}

export function errorMessage(data, resp) {
  if (data && typeof data === "object") {
    if (data.message) return `${resp.status} ${data.error_code || ""}: ${data.message}`;
    if (data.error && data.error.message) return `${resp.status}: ${data.error.message}`;
  }
  return `${resp.status} ${resp.statusText}`;
}

export function errorBox(id = "error") { return h("div", { class: "error", id, role: "alert" }); }

export function fail(box, err) { box.textContent = err.message || String(err); }

export function stateOf(ep) {
  if (ep.state.config_update === "IN_PROGRESS") return "updating";
  return ep.state.ready;
}

export function stateLabel(ep) {
  const s = stateOf(ep);
  const text = { READY: "Ready", NOT_READY: "Not ready", updating: "Updating" }[s] || s;
  return h("span", { class: `state-${s}` }, text);
}

export function levelCovers(level, needed) {
  const rank = { CAN_VIEW: 1, CAN_QUERY: 2, CAN_MANAGE: 3 };
  return (rank[level] || 0) >= rank[needed];
}

export function entitiesOf(ep) {
  const config = ep.config || ep.pending_config || { served_entities: [] };
  return config.served_entities;
}

export function taskOf(ep) {
  return ep.task || (entitiesOf(ep)[0] || {}).task ||
    ((entitiesOf(ep)[0] || {}).external_model || {}).task || "llm/v1/chat";
}

export function tagList(tags) {
  return (tags || []).map((t) => h("span", { class: "tag" }, t.value ? `${t.key}: ${t.value}` : t.key));
}

/** Render the current route again (after a change the page should show). */
export function rerender() { window.dispatchEvent(new HashChangeEvent("hashchange")); }

/** POST ``body`` as JSON and yield the answer's parts as they stream in, split at
 * ``separator`` (``"\n\n"``: server-sent events; ``"\n"``: JSON lines). */
export async function* postStream(path, body, separator) {
  const resp = await fetch(path, { method: "POST", headers: headers({ "Content-Type": "application/json" }), body: JSON.stringify(body) });
  if (!resp.ok) { const data = await resp.json().catch(() => null); throw new APIError(resp.status, errorMessage(data, resp)); }
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf(separator)) >= 0) {
      const part = buffer.slice(0, cut);
      buffer = buffer.slice(cut + separator.length);
      yield part;
    }
  }
}
