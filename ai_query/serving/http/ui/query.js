// Query endpoint (request editor, response, code snippets) and the AI Playground (streamed
// chat with up to three endpoints side by side).

import { APIError, TOKEN_KEY, postStream, add, api, entitiesOf, errorBox, errorMessage, fail, h, headers, levelCovers, main, rerender, session, show, stateLabel, stateOf, tagList, taskOf, token } from "./lib.js";

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

export async function queryView(name) {
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

/** The Playground's starting values (the chat routes themselves add no defaults). */
export const PLAYGROUND_DEFAULTS = { temperature: 0.7, repetition_penalty: 1.1 };

export async function playgroundView() {
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
  // vLLM's repetition penalty gives a small model a fair chance (measured in the README); it is
  // shown and sent like the temperature, so that the user sees and can change it.
  const temperature = h("input", { id: "pg-temperature", type: "number", step: "0.1", min: 0, max: 2, value: String(PLAYGROUND_DEFAULTS.temperature) });
  const penalty = h("input", { id: "pg-repetition-penalty", type: "number", step: "0.05", min: 0.05, max: 2, value: String(PLAYGROUND_DEFAULTS.repetition_penalty), title: "1.0 turns it off; above 1.0 makes repeating words less likely" });
  const maxTokens = h("input", { id: "pg-max-tokens", type: "number", min: 1, value: "256" });
  const prompt = h("textarea", { id: "pg-prompt", rows: 3, placeholder: "Ask something" });
  // An image goes with the prompt as an OpenAI image_url part (a data URL), for vision models.
  const image = h("input", { id: "pg-image", type: "file", accept: "image/png,image/jpeg,image/gif,image/webp" });
  const preview = h("img", { id: "pg-image-preview", class: "thumb", alt: "", hidden: true });
  image.addEventListener("change", async () => {
    const file = image.files[0];
    preview.hidden = !file;
    preview.src = file ? await dataUrl(file) : "";
  });
  const answers = h("div", { class: "row", id: "pg-answers" });
  add(h("div", { class: "card" },
    h("label", {}, "Endpoints (up to three, side by side)"), h("div", { class: "row" }, models),
    h("div", { class: "row" }, h("div", {}, h("label", { for: "pg-temperature" }, "Temperature"), temperature),
      h("div", {}, h("label", { for: "pg-repetition-penalty" }, "Repetition penalty"), penalty),
      h("div", {}, h("label", { for: "pg-max-tokens" }, "Max tokens"), maxTokens)),
    h("label", { for: "pg-system" }, "System prompt"), system,
    h("label", { for: "pg-prompt" }, "Prompt"), prompt,
    h("label", { for: "pg-image" }, "Image (optional, for vision models)"), h("div", { class: "row" }, image, preview),
    h("button", { id: "pg-send", onclick: async () => {
      const messages = [];
      if (system.value.trim()) messages.push({ role: "system", content: system.value });
      const file = image.files[0];
      const content = file
        ? [{ type: "text", text: prompt.value }, { type: "image_url", image_url: { url: await dataUrl(file) } }]
        : prompt.value;
      messages.push({ role: "user", content });
      answers.replaceChildren();
      models.map((m) => m.value).filter(Boolean).forEach((model, i) => {
        const text = h("div", { class: "answer", id: `pg-answer-${i + 1}` });
        const stats = h("p", { class: "muted", id: `pg-stats-${i + 1}` }, "streaming...");
        answers.append(h("div", {}, h("strong", {}, model), text, stats));
        streamChat(model, { messages, temperature: Number(temperature.value), repetition_penalty: Number(penalty.value), max_tokens: Number(maxTokens.value) }, text, stats);
      });
    } }, "Send")), answers);
}

/** ``file``'s bytes as a data: URL. */
function dataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

/** Stream one chat answer from /v1/chat/completions (server-sent events) into ``text``. */
async function streamChat(model, params, text, stats) {
  const started = performance.now();
  let first = null;
  let usage = null;
  try {
    const body = { model, ...params, stream: true, stream_options: { include_usage: true } };
    for await (const event of postStream("/v1/chat/completions", body, "\n\n")) {
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
