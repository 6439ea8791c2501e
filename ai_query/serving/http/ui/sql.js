// The SQL editor: uploaded tables, a query with progress, results, downloads.

import { APIError, TOKEN_KEY, postStream, add, api, entitiesOf, errorBox, errorMessage, fail, h, headers, levelCovers, main, rerender, session, show, stateLabel, stateOf, tagList, taskOf, token } from "./lib.js";

// ---------- SQL editor ----------

export async function sqlView() {
  const box = errorBox();
  show(h("h1", {}, "SQL editor"), box);
  const tables = h("ul", { id: "sql-tables" });
  const fill = (data) => tables.replaceChildren(...data.tables.map((t) => h("li", {},
    h("code", {}, t.name), ` (${tableFacts(t)}) `,
    h("button", { class: "secondary", "data-table": t.name, onclick: async () => {
      box.textContent = "";
      try { fill(await api(`/api/ui/sql/tables/${encodeURIComponent(t.name)}`, { method: "DELETE" })); }
      catch (err) { fail(box, err); }
    } }, "Delete"))));
  const refresh = async () => fill(await api("/api/ui/sql/tables"));
  try { await refresh(); } catch (err) { fail(box, err); return; }
  const file = h("input", { id: "sql-file", type: "file", accept: ".csv,.parquet" });
  const tableName = h("input", { id: "sql-table-name", placeholder: "table name" });
  const index = {
    name: h("input", { id: "sql-index-name", placeholder: "index name" }),
    key: h("input", { id: "sql-index-key", placeholder: "key column" }),
    text: h("input", { id: "sql-index-text", placeholder: "text column" }),
    endpoint: h("input", { id: "sql-index-endpoint", placeholder: "embeddings endpoint" }),
  };
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
    h("details", { id: "sql-index" }, h("summary", {}, "Vector index (optional: for vector_search)"),
      h("div", { class: "row" }, index.name, index.key, index.text, index.endpoint)),
    h("button", { id: "sql-upload", class: "secondary", onclick: async () => {
      box.textContent = "";
      const picked = file.files[0];
      if (!picked) { box.textContent = "pick a CSV or Parquet file"; return; }
      const format = picked.name.toLowerCase().endsWith(".parquet") ? "parquet" : "csv";
      const name = tableName.value || picked.name.replace(/\.[^.]*$/, "").replace(/[^A-Za-z0-9_]/g, "_");
      const bytes = new Uint8Array(await picked.arrayBuffer());
      let binary = "";
      for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
      const body = { format, data_base64: btoa(binary) };
      if (index.name.value) body.vector_index = Object.fromEntries(Object.entries(index).map(([k, el]) => [k, el.value]));
      try { await api(`/api/ui/sql/tables/${encodeURIComponent(name)}`, { method: "POST", body }); await refresh(); }
      catch (err) { fail(box, err); }
    } }, "Upload table")),
  h("div", { class: "card" }, h("label", { for: "sql" }, "Query (DuckDB SQL with ai_query and the task functions)"), editor,
    h("button", { id: "sql-run", onclick: () => runSQL(editor.value, bar, status, result, downloads, box) }, "Run"), bar, status),
  downloads, result);
}

/** "csv, 120 bytes, 3 rows, 2 columns": what the tables list says of an uploaded table. */
function tableFacts(t) {
  const columns = Array.isArray(t.columns) ? t.columns.length : t.columns;
  return [t.format, `${t.bytes} bytes`, t.rows === undefined ? null : `${t.rows} rows`,
    columns === undefined ? null : `${columns} columns`,
    t.vector_index ? `vector index ${t.vector_index}` : null].filter((x) => x !== null).join(", ");
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
    for await (const part of postStream("/api/ui/sql/query", { sql }, "\n")) {
      const line = JSON.parse(part);
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
