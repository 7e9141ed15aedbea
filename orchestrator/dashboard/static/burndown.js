// orch burn-down: a job's dollars and GPU-hours spent, the forecast band (P10/P50/P90) to the finish,
// its budget and DeepSeek-V3's totals, and the utilisation per pool; refreshed every 10 s.
// Every value from the server is put in the page as text (never as HTML).
"use strict";

const REFRESH_MS = 10000;
const usd = money;  // money.js: the CLI's one money format
const num = (x) => (x >= 100 ? Math.round(x).toLocaleString() : x.toPrecision(4));

async function api(path) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem("orch-token");
  if (token) headers.Authorization = "Bearer " + token;
  const r = await fetch(path, { headers });
  if (!r.ok) throw new Error(r.statusText);
  return r.json();
}

function ms(t) { return new Date(t * 1000); }

// One chart: the spent line, the band from now to each quantile's finish, budget and reference lines.
function draw(id, title, spent, band, finish, budget, reference, refName, now) {
  const traces = [{ x: spent.t.map(ms), y: spent.v, name: "spent", mode: "lines", line: { color: "#2f6fdb" } }];
  const last = spent.v.length ? spent.v[spent.v.length - 1] : 0;
  for (const [q, dash] of [["p10", "dot"], ["p50", "solid"], ["p90", "dot"]]) {
    if (band[q] == null || finish[q] == null) continue;
    traces.push({ x: [ms(now), ms(finish[q])], y: [last, band[q]], name: "forecast " + q.toUpperCase(), mode: "lines+markers",
                  line: { color: "#d98c00", dash } });
  }
  const end = Math.max(now, ...Object.values(finish).filter((v) => v != null));
  const start = spent.t.length ? spent.t[0] : now;
  const flat = (y, name, color) => ({ x: [ms(start), ms(end)], y: [y, y], name, mode: "lines", line: { color, dash: "dash" } });
  if (budget) traces.push(flat(budget, "budget", "#c0392b"));
  if (reference) traces.push(flat(reference, refName, "#7f8c8d"));
  Plotly.react(document.getElementById(id), traces, { title, margin: { l: 70, r: 20, t: 40, b: 40 }, height: 340 },
               { displayModeBar: false, responsive: true });
}

function table(rows) {
  const body = document.querySelector("#pools tbody");
  body.replaceChildren(...rows.map((r) => {
    const tr = document.createElement("tr");
    const h = r.node_hours || {}, d = r.usd || {};
    const money = (v) => (v === null || v === undefined ? "-" : usd(v));
    const hours = (v) => (v === undefined ? "-" : num(v));
    const unusedUsd = d.idle === null || d.spare === null || !r.usd ? null : d.idle + d.spare;
    for (const v of [r.pool, r.kind, r.nodes, r.busy, r.idle, r.down, r.cordoned, num(r.gpu_hours), usd(r.cost_usd),
                     hours(h.up), hours(h.allocated), hours(h.idle === undefined ? undefined : h.idle + h.spare),
                     hours(h.down), money(unusedUsd), money(d.down)]) {
      const td = document.createElement("td");
      td.textContent = String(v);
      tr.append(td);
    }
    return tr;
  }));
}

async function jobs() {
  const list = await api("/api/jobs");
  const select = document.getElementById("job");
  const wanted = new URLSearchParams(location.search).get("job");
  if (!select.options.length) {
    for (const j of list) select.append(new Option(j.id + " (" + j.state + ")", j.id));
    const live = list.find((j) => ["running", "placing", "recovering"].includes(j.state));
    select.value = wanted || (live ? live.id : list.length ? list[list.length - 1].id : "");
    select.addEventListener("change", refresh);
  }
  return select.value;
}

async function refresh() {
  try {
    const job = await jobs();
    if (!job) return;
    const d = await api("/api/jobs/" + encodeURIComponent(job) + "/burndown");
    const f = d.forecast;
    document.getElementById("title").textContent = "Burn-down: " + d.job;
    document.getElementById("headline").textContent =
      "step " + f.progress.step.toLocaleString() + " of " + f.progress.total_steps.toLocaleString() +
      "; forecast P50 " + usd(f.cost_usd.p50) + " (P10 " + usd(f.cost_usd.p10) + ", P90 " + usd(f.cost_usd.p90) +
      "), " + num(f.gpu_hours.p50) + " GPU-hours, finish " + (f.finish_at_iso.p50 || "-") +
      (f.budget.usd ? "; budget " + usd(f.budget.usd) : "") + "; DeepSeek-V3 " + usd(f.reference.cost_usd);
    draw("chart-usd", "Dollars", { t: d.spent.t, v: d.spent.cost_usd }, f.cost_usd, f.finish_at, f.budget.usd,
         f.reference.cost_usd, "DeepSeek-V3 " + usd(f.reference.cost_usd), d.now);
    draw("chart-hours", "GPU-hours", { t: d.spent.t, v: d.spent.gpu_hours }, f.gpu_hours, f.finish_at, f.budget.gpu_hours,
         f.reference.gpu_hours, "DeepSeek-V3 2.788M GPU-hours", d.now);
    table(d.utilisation);
    document.body.dataset.loaded = "1";
  } catch (err) {
    document.getElementById("headline").textContent = "error: " + err.message;
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
