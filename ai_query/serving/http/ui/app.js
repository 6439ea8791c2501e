// The web UI: one page, hash routes, and the server's own REST API called with the user's
// bearer token (kept in sessionStorage only). Every permission check and validation message
// is the API's; the page only hides controls the signed-in principal could not use anyway.
// With auth off (a server without tokens) the page never asks for one: GET /api/ui/me answers
// the local admin to anyone, and the page opens as that principal.

import { APIError, TOKEN_KEY, add, api, entitiesOf, errorBox, errorMessage, fail, h, headers, levelCovers, main, rerender, session, show, stateLabel, stateOf, tagList, taskOf, token } from "./lib.js";
import { createView, endpointView, listView } from "./endpoints.js";
import { jobsView } from "./jobs.js";
import { playgroundView, queryView } from "./query.js";
import { sqlView } from "./sql.js";

// ---------- sign-in ----------

function signInView(message = "") {
  const input = h("input", { id: "token", type: "password", autocomplete: "off", placeholder: "dapi..." });
  const box = errorBox();
  box.textContent = message;
  const form = h("form", { class: "card", id: "signin", onsubmit: async (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    try { await signIn(); location.hash = "#/endpoints"; rerender(); } catch (err) { fail(box, err); }
  } },
  h("h1", {}, "Sign in"),
  h("p", { class: "muted" }, "Paste a personal access token. It stays in this browser tab only."),
  h("label", { for: "token" }, "Token"), input,
  h("button", { type: "submit" }, "Sign in"), box);
  show(form);
}

/** Ask the server who we are: with the tab's token, or with none (auth off answers anyway). */
async function signIn() {
  try {
    session.me = await api("/api/ui/me");
  } catch (err) {
    sessionStorage.removeItem(TOKEN_KEY);
    session.me = null;
    throw err;
  }
  const authOff = session.me.auth === false;
  if (authOff) sessionStorage.removeItem(TOKEN_KEY);  // the server takes no tokens
  document.getElementById("who").textContent =
    `${session.me.name}${session.me.is_admin ? " (admin)" : ""}${authOff ? " · auth off" : ""}`;
  document.getElementById("nav").hidden = false;
  document.getElementById("nav-sql").hidden = !session.me.sql_editor;
  document.getElementById("nav-jobs").hidden = !session.me.jobs;
  document.getElementById("signout").hidden = authOff;
}

document.getElementById("signout").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  session.me = null;
  document.getElementById("who").textContent = "";
  document.getElementById("nav").hidden = true;
  document.getElementById("signout").hidden = true;
  location.hash = "#/";
  signInView();
});

// ---------- routing ----------

async function route() {
  if (!session.me) {
    const given = token();
    try { await signIn(); } catch (err) {
      // No token yet and a 401: auth is on, so ask for one (an error is news only otherwise).
      signInView(!given && err.status === 401 ? "" : err.message);
      return;
    }
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
