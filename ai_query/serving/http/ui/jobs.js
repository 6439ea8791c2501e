// Jobs: the run log of the server's jobs directory.

import { APIError, TOKEN_KEY, add, api, entitiesOf, errorBox, errorMessage, fail, h, headers, levelCovers, main, rerender, session, show, stateLabel, stateOf, tagList, taskOf, token } from "./lib.js";

// ---------- jobs ----------

export async function jobsView() {
  const box = errorBox();
  show(h("h1", {}, "Jobs"), box);
  let data;
  try { data = await api("/api/ui/jobs"); } catch (err) { fail(box, err); return; }
  if (!data.jobs.length) add(h("p", { class: "muted" }, "No job files in the jobs directory."));
  // Each entry is a job (job, mode, output, schedule), a job file that does not load (error
  // alone: the server says what is wrong without the file's contents), or a file that is not a
  // job file (skipped).
  for (const job of data.jobs) {
    const card = h("div", { class: "card", "data-job": job.job || job.file },
      h("h2", {}, job.job || job.file),
      job.job ? h("p", { class: "muted" }, `${job.file} · ${job.mode} → ${job.output} · schedule: ${job.schedule || "none"}`) : null,
      job.skipped ? h("p", { class: "muted" }, job.skipped) : null,
      job.error ? h("p", { class: "error" }, job.error) : null);
    if (job.runs.length) {
      card.append(h("table", { class: "runs" },
        h("thead", {}, h("tr", {}, ["Run", "Status", "Started", "Rows ok", "Rows failed", "Tokens", "Wall time", "Message"].map((t) => h("th", {}, t)))),
        h("tbody", {}, job.runs.map((r) => h("tr", {},
          h("td", {}, r.run_id), h("td", { class: `run-${r.status}` }, r.status), h("td", {}, r.started_at),
          h("td", {}, r.rows_ok), h("td", {}, r.rows_failed), h("td", {}, r.prompt_tokens + r.completion_tokens),
          h("td", {}, `${r.wall_seconds.toFixed(1)} s`), h("td", {}, r.message || ""))))));
    } else if (job.job && !job.error) card.append(h("p", {}, "No runs yet."));
    add(card);
  }
}
