// orch dashboard: one page per hash route, refreshed every two seconds without reloading.
// Every value from the server is put in the page as text (never as HTML).
"use strict";

const REFRESH_MS = 2000;
let timer = null;
let routeToken = 0;

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, "");
    else if (v !== false && v != null) el.setAttribute(k, v);
  }
  for (const c of children.flat()) el.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return el;
}

const fmt = {
  hours: (x) => (x >= 100 ? Math.round(x).toLocaleString() : x.toFixed(4)),
  usd: money,
  pct: (x) => (100 * x).toFixed(1) + "%",
  time: (t) => new Date(t * 1000).toLocaleTimeString(),
  until: (t) => { const s = t - Date.now() / 1000; return s <= 0 ? "now" : s < 90 ? "in " + Math.round(s) + "s" : s < 5400 ? "in " + Math.round(s / 60) + "m" : "in " + Math.round(s / 3600) + "h"; },
  ago: (t) => { const s = Date.now() / 1000 - t; return s < 90 ? Math.round(s) + "s" : s < 5400 ? Math.round(s / 60) + "m" : Math.round(s / 3600) + "h"; },
};

function token() { return sessionStorage.getItem("orch-token") || ""; }

// A dashboard that listens beyond loopback needs a token for reads too: send it when there is one.
async function api(path) {
  const headers = { Accept: "application/json" };
  if (token()) headers.Authorization = "Bearer " + token();
  const r = await fetch(path, { headers });
  if (!r.ok) throw new Error((await r.json().catch(() => ({}))).detail || r.statusText);
  return r.json();
}

// Verification runs on the server as a task; poll its progress until it ends.
async function verifyCheckpoint(id, step) {
  const r = await fetch(`/api/jobs/${encodeURIComponent(id)}/checkpoints/${step}/verify`, { method: "POST",
    headers: { "Content-Type": "application/json", Authorization: "Bearer " + token() }, body: "{}" });
  let task = await r.json().catch(() => ({}));
  if (!r.ok) return "refused: " + (task.detail || r.statusText);
  while (task.state === "running") {
    await new Promise((done) => setTimeout(done, 500));
    task = await api(task.progress || `/api/tasks/${task.id}`);
  }
  return task.verified ? "verified ✓" : "problems: " + task.problems.join("; ");
}

async function act(path, body) {
  const r = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json", Authorization: "Bearer " + token() },
                                body: JSON.stringify(body || {}) });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) { toast("refused: " + (data.detail || r.statusText)); return null; }
  toast((data.done || ["done"]).join("; "));
  refreshNow();
  return data;
}

function toast(text) {
  const el = document.getElementById("toast");
  el.textContent = text; el.hidden = false;
  clearTimeout(el._t); el._t = setTimeout(() => (el.hidden = true), 5000);
}

function chart(id, traces, layout) {
  const el = document.getElementById(id);
  if (!el) return;
  Plotly.react(el, traces, Object.assign({ margin: { l: 60, r: 20, t: 36, b: 40 }, font: { size: 12 } }, layout),
               { displaylogo: false, responsive: true });
}

// Rebuild the page's text, but keep each chart element (and the plot in it) across refreshes:
// Plotly.react then updates it in place, so charts do not flicker or lose zoom every two seconds.
function setView(...children) {
  const view = document.getElementById("view");
  const kept = {};
  view.querySelectorAll(".chart[id]").forEach((el) => (kept[el.id] = el));
  const fresh = h("div", {}, ...children);
  fresh.querySelectorAll(".chart[id]").forEach((el) => { if (kept[el.id]) el.replaceWith(kept[el.id]); });
  view.replaceChildren(...fresh.childNodes);
}

const verified = {};  // "job@step" -> what verification said, kept across refreshes

// ---------------------------------------------------------------- header

async function renderSummary() {
  const s = await api("/api/summary");
  const jobs = Object.entries(s.jobs).map(([k, v]) => `${v} ${k}`).join(", ") || "no jobs";
  document.getElementById("summary").replaceChildren(
    h("span", {}, "devices ", h("b", {}, `${s.devices_used}/${s.devices}`), " used · ", jobs, " · ",
      h("b", { id: "summary-hours" }, fmt.hours(s.gpu_hours.total)), " GPU-h · ", h("b", {}, fmt.usd(s.cost_usd)),
      " · goodput ", h("b", {}, fmt.pct(s.goodput)), s.cluster_reachable ? "" : " · cluster not reachable"));
}

async function renderOperator() {
  const label = document.getElementById("operator");
  const clear = document.getElementById("token-clear");
  if (!token()) { label.textContent = "read-only"; clear.hidden = true; return; }
  const r = await fetch("/api/whoami", { headers: { Authorization: "Bearer " + token() } });
  if (r.ok) { label.textContent = "operator: " + (await r.json()).actor; clear.hidden = false; }
  else { sessionStorage.removeItem("orch-token"); label.textContent = "token refused: read-only"; clear.hidden = true; }
}

// ---------------------------------------------------------------- cluster

async function cluster() {
  const [nodes, events] = await Promise.all([api("/api/nodes").catch((e) => ({ error: e.message })), api("/api/events?limit=2000")]);
  if (nodes.error) { setView(h("p", { class: "muted" }, nodes.error)); return; }
  const pools = {};
  for (const n of nodes) (pools[n.pool] = pools[n.pool] || { kind: n.kind, nodes: [] }).nodes.push(n);
  const signedIn = !!token();
  const sections = Object.entries(pools).map(([pool, p]) => h("section", { "data-pool": pool },
    h("h2", {}, pool, " ", h("span", { class: "badge " + p.kind }, p.kind)),
    h("table", { class: "nodes" }, h("tr", {}, ["node", "devices used", "health", "cordoned", "jobs", "actions"].map((c) => h("th", {}, c))),
      p.nodes.map((n) => h("tr", { "data-node": n.name },
        h("td", {}, n.name),
        h("td", {}, h("span", { class: "bar" }, h("span", { style: `width:${(100 * n.used) / Math.max(1, n.devices)}%` })), ` ${n.used}/${n.devices}`),
        h("td", {}, h("span", { class: "badge " + n.health }, n.health)),
        h("td", {}, n.cordoned ? "yes" + (n.cordon_reason ? ` (${n.cordon_reason})` : "") : "-"),
        h("td", {}, n.jobs.length ? n.jobs.map((j) => h("a", { href: "#/jobs/" + j }, j)) : "-"),
        h("td", {},
          h("button", { disabled: !signedIn, onclick: () => act(`/api/nodes/${n.name}/${n.cordoned ? "uncordon" : "cordon"}`, {}) }, n.cordoned ? "Uncordon" : "Cordon"), " ",
          h("button", { disabled: !signedIn, onclick: () => act(`/api/nodes/${n.name}/drain`, {}) }, "Drain"), " ",
          h("button", { disabled: !signedIn, onclick: () => confirm(`Take ${n.name} away (30 s notice) and replace it?`) && act(`/api/nodes/${n.name}/preempt`, { notice: 30, replace: true }) }, "Preempt drill")))))));
  const interruptions = events.filter((e) => ["node.lost", "node.preempt", "node.notice", "node.replaced", "job.recovering"].includes(e.kind)).slice(-15).reverse();
  setView(
    h("div", { class: "cards" },
      h("div", { class: "card" }, h("div", { class: "n", id: "cluster-nodes" }, nodes.length), h("div", { class: "l" }, "nodes")),
      h("div", { class: "card" }, h("div", { class: "n" }, nodes.filter((n) => n.health === "alive").length), h("div", { class: "l" }, "alive")),
      h("div", { class: "card" }, h("div", { class: "n" }, nodes.reduce((a, n) => a + n.used, 0) + "/" + nodes.reduce((a, n) => a + (n.health === "alive" ? n.devices : 0), 0)), h("div", { class: "l" }, "devices used")),
      h("div", { class: "card" }, h("div", { class: "n" }, nodes.filter((n) => n.cordoned).length), h("div", { class: "l" }, "cordoned"))),
    h("div", { id: "chart-devices", class: "chart" }),
    ...sections,
    h("h2", {}, "Recent interruptions and recoveries"),
    interruptions.length ? h("table", { id: "interruptions" }, interruptions.map((e) => h("tr", {}, h("td", {}, fmt.time(e.at)), h("td", { class: "event-kind" }, e.kind), h("td", {}, e.message), h("td", { class: "muted" }, e.actor))))
      : h("p", { class: "muted", id: "interruptions" }, "none"));
  const names = Object.keys(pools);
  chart("chart-devices", [
    { type: "bar", name: "used", x: names, y: names.map((p) => pools[p].nodes.reduce((a, n) => a + n.used, 0)), marker: { color: "#2f6fdb" } },
    { type: "bar", name: "free", x: names, y: names.map((p) => pools[p].nodes.reduce((a, n) => a + n.free, 0)), marker: { color: "#b8c4d6" } },
    { type: "bar", name: "down", x: names, y: names.map((p) => pools[p].nodes.filter((n) => n.health !== "alive").reduce((a, n) => a + n.devices, 0)), marker: { color: "#c0392b" } },
  ], { barmode: "stack", title: { text: "Devices by pool" }, yaxis: { title: { text: "devices" } } });
}

// ---------------------------------------------------------------- jobs

async function jobs() {
  const [list, cost] = await Promise.all([api("/api/jobs"), api("/api/cost")]);
  const projections = Object.fromEntries(cost.per_job.map((j) => [j.job, j.projection]));
  const signedIn = !!token();
  const active = list.filter((j) => !["succeeded", "failed", "cancelled"].includes(j.state));
  const rows = list.slice().reverse().map((j) => {
    const p = projections[j.id];
    const eta = p && p.finish_at ? fmt.until(p.finish_at) : "-";
    return h("tr", { "data-job": j.id },
      h("td", {}, h("a", { href: "#/jobs/" + j.id }, j.id)), h("td", {}, j.team), h("td", {}, j.priority),
      h("td", {}, h("span", { class: "badge " + j.state }, j.state)),
      h("td", {}, h("span", { class: "bar" }, h("span", { style: `width:${(100 * j.step) / Math.max(1, j.total_steps)}%` })), ` ${j.step}/${j.total_steps}`),
      h("td", {}, j.loss == null ? "-" : j.loss.toFixed(3)), h("td", {}, eta), h("td", {}, j.restarts),
      h("td", {}, j.message || ""),
      h("td", {}, ["succeeded", "failed", "cancelled"].includes(j.state) ? "" :
        h("button", { disabled: !signedIn, onclick: () => confirm(`Cancel ${j.id}?`) && act(`/api/jobs/${j.id}/cancel`, {}) }, "Cancel")));
  });
  setView(h("div", { class: "cards" },
      h("div", { class: "card" }, h("div", { class: "n" }, active.length), h("div", { class: "l" }, "queued or running")),
      h("div", { class: "card" }, h("div", { class: "n" }, list.length), h("div", { class: "l" }, "jobs in all"))),
    h("h2", {}, "Jobs"),
    h("table", { id: "jobs-table" }, h("tr", {}, ["job", "team", "priority", "state", "progress", "loss", "ETA", "restarts", "note", ""].map((c) => h("th", {}, c))), rows));
}

// The job's plan beside what the ledger measured (start-up apart from training), and its pools, an
// unpriced one named with the price it was charged at: the lines of `orch cost JOB`.
function accounting(cost) {
  const g = cost.gpu_hours, plan = cost.plan, unpriced = cost.unpriced_pools || [];
  const row = (key, what, hours, usd, note) => h("tr", { "data-row": key }, h("td", {}, what), h("td", {}, hours), h("td", {}, usd), h("td", { class: "muted" }, note));
  return h("div", {},
    h("h2", {}, "Plan and measured"),
    h("table", { id: "job-accounting" }, h("tr", {}, ["", "device-hours", "cost", ""].map((c) => h("th", {}, c))),
      plan ? row("plan", "plan", fmt.hours(plan.gpu_hours), fmt.usd(plan.cost_usd), plan.basis) : row("plan", "plan", "-", "-", "no plan for this spec"),
      row("training", "measured training (productive + checkpoint)", fmt.hours(g.productive + g.checkpoint), "", ""),
      row("startup", "start-up", fmt.hours(g.startup), "", "placement to the first step: not training"),
      row("total", "measured total", fmt.hours(g.total), fmt.usd(cost.cost_usd), `goodput ${fmt.pct(cost.goodput)}`)),
    h("table", { id: "job-pools" }, h("tr", {}, ["pool", "kind", "device-hours", "cost", ""].map((c) => h("th", {}, c))),
      Object.entries(cost.by_pool).sort(([a], [b]) => a.localeCompare(b)).map(([name, p]) => h("tr", { "data-pool": name },
        h("td", {}, name), h("td", {}, p.kind), h("td", {}, fmt.hours(p.gpu_hours)), h("td", {}, fmt.usd(p.cost_usd)),
        h("td", { class: unpriced.includes(name) ? "warn" : "muted" }, unpriced.includes(name)
          ? `no price_per_gpu_hour: charged cost.price_per_gpu_hour ${p.gpu_hours > 0 ? fmt.usd(p.cost_usd / p.gpu_hours) : "-"}` : "")))));
}

async function jobPage(id) {
  const [job, metrics, ck, cost] = await Promise.all([api("/api/jobs/" + encodeURIComponent(id)), api(`/api/jobs/${encodeURIComponent(id)}/metrics`),
    api(`/api/jobs/${encodeURIComponent(id)}/checkpoints`).catch((e) => ({ error: e.message })), api("/api/cost/" + encodeURIComponent(id))]);
  const attempts = [...new Set(metrics.attempt)];
  const signedIn = !!token();
  setView(
    h("h2", {}, job.id, " ", h("span", { class: "badge " + job.state, id: "job-state" }, job.state)),
    h("div", { class: "cards" },
      h("div", { class: "card" }, h("div", { class: "n", id: "job-step" }, `${job.step}/${job.total_steps}`), h("div", { class: "l" }, "steps")),
      h("div", { class: "card" }, h("div", { class: "n" }, job.loss == null ? "-" : job.loss.toFixed(4)), h("div", { class: "l" }, "loss")),
      h("div", { class: "card" }, h("div", { class: "n" }, job.tokens_per_s == null ? "-" : Math.round(job.tokens_per_s).toLocaleString()), h("div", { class: "l" }, "tokens/s")),
      h("div", { class: "card" }, h("div", { class: "n", id: "job-restarts" }, job.restarts), h("div", { class: "l" }, `restarts (attempt ${job.attempt})`)),
      h("div", { class: "card" }, h("div", { class: "n" }, fmt.hours(cost.gpu_hours.total)), h("div", { class: "l" }, "device-hours")),
      h("div", { class: "card" }, h("div", { class: "n" }, fmt.pct(cost.goodput)), h("div", { class: "l" }, "goodput"))),
    accounting(cost),
    h("div", { class: "grid2" },
      h("div", { id: "chart-loss", class: "chart" }), h("div", { id: "chart-throughput", class: "chart" }),
      h("div", { id: "chart-steptime", class: "chart" }), h("div", { id: "chart-balance", class: "chart" })),
    h("h2", {}, "Checkpoints"),
    ck.error ? h("p", { class: "muted" }, ck.error) : h("div", {},
      h("p", { class: "muted" }, ck.uri, ck.in_flight.length ? ` · save in flight at step ${ck.in_flight[0]}` : " · no save in flight"),
      h("table", { id: "checkpoints" }, h("tr", {}, ["step", "tokens", "size", "shards", "committed", "verified"].map((c) => h("th", {}, c))),
        ck.committed.slice().reverse().map((c) => h("tr", { "data-step": c.step }, h("td", {}, c.step), h("td", {}, Math.round(c.tokens).toLocaleString()),
          h("td", {}, (c.bytes / 1e6).toFixed(1) + " MB"), h("td", {}, c.files), h("td", {}, fmt.time(c.created_at)),
          h("td", {}, verified[`${id}@${c.step}`] || h("button", { disabled: !signedIn, onclick: async () => {
            verified[`${id}@${c.step}`] = "verifying…";
            verified[`${id}@${c.step}`] = await verifyCheckpoint(id, c.step);
            refreshNow(); } }, "Verify")))))),
    h("h2", {}, "State history"),
    h("table", { id: "transitions" }, job.transitions.map((t) => h("tr", {}, h("td", {}, fmt.time(t.at)), h("td", {}, `${t.from_state || "-"} → ${t.to_state}`), h("td", {}, t.reason || "")))));
  const byAttempt = (field) => attempts.map((a) => {
    const idx = metrics.step.map((_, i) => i).filter((i) => metrics.attempt[i] === a && metrics[field][i] != null);
    return { type: "scatter", mode: "lines+markers", marker: { size: 3 }, name: "attempt " + a, x: idx.map((i) => metrics.step[i]), y: idx.map((i) => metrics[field][i]) };
  });
  chart("chart-loss", byAttempt("loss"), { title: { text: "Loss" }, xaxis: { title: { text: "step" } } });
  chart("chart-throughput", byAttempt("tokens_per_s"), { title: { text: "Tokens per second" }, xaxis: { title: { text: "step" } } });
  chart("chart-steptime", byAttempt("step_time_s"), { title: { text: "Step time (s)" }, xaxis: { title: { text: "step" } } });
  chart("chart-balance", byAttempt("expert_imbalance"), { title: { text: "Expert load: max / mean" }, xaxis: { title: { text: "step" } } });
}

// ---------------------------------------------------------------- cost

async function costPage() {
  const [cost, series] = await Promise.all([api("/api/cost"), api("/api/cost/series")]);
  const ref = cost.reference;
  const projected = cost.per_job.filter((j) => j.projection).reduce((a, j) => a + j.projection.gpu_hours, 0);
  const projectedUsd = cost.per_job.filter((j) => j.projection).reduce((a, j) => a + j.projection.cost_usd, 0);
  const finish = Math.max(0, ...cost.per_job.filter((j) => j.projection && j.projection.finish_at).map((j) => j.projection.finish_at));
  const teams = Object.entries(cost.by_team);
  setView(
    h("div", { class: "cards" },
      h("div", { class: "card" }, h("div", { class: "n", id: "cost-hours" }, fmt.hours(cost.gpu_hours.total)), h("div", { class: "l" }, "device-hours burned")),
      h("div", { class: "card" }, h("div", { class: "n" }, fmt.usd(cost.cost_usd)), h("div", { class: "l" }, "spent")),
      h("div", { class: "card" }, h("div", { class: "n", id: "cost-goodput" }, fmt.pct(cost.goodput)), h("div", { class: "l" }, "goodput")),
      h("div", { class: "card" }, h("div", { class: "n" }, projected ? fmt.hours(projected) : "-"), h("div", { class: "l" }, "projected at completion")),
      h("div", { class: "card" }, h("div", { class: "n" }, (ref.gpu_hours / 1e6).toFixed(3) + "M"), h("div", { class: "l" }, `DeepSeek-V3 GPU-hours (${fmt.usd(ref.cost_usd)})`))),
    h("div", { id: "chart-gpu-hours", class: "chart" }),
    h("div", { id: "chart-reference", class: "chart" }),
    h("h2", {}, "Teams"),
    h("table", { id: "teams" }, h("tr", {}, ["team", "GPU-hours", "cost", "budget (GPU-h)", "budget ($)", "used of budget"].map((c) => h("th", {}, c))),
      teams.map(([name, t]) => { const b = (cost.budgets || {})[name] || {};
        const frac = Math.max(b.budget_gpu_hours ? t.gpu_hours / b.budget_gpu_hours : 0, b.budget_usd ? t.cost_usd / b.budget_usd : 0);
        return h("tr", {}, h("td", {}, name), h("td", {}, fmt.hours(t.gpu_hours)), h("td", {}, fmt.usd(t.cost_usd)),
          h("td", {}, b.budget_gpu_hours == null ? "-" : fmt.hours(b.budget_gpu_hours)), h("td", {}, b.budget_usd == null ? "-" : fmt.usd(b.budget_usd)),
          h("td", {}, b.budget_gpu_hours || b.budget_usd ? fmt.pct(frac) : "-")); })));
  const t = series.t.map((x) => new Date(x * 1000));
  // the ledger's categories (names, order, colours) come from the API: lifecycle.LedgerCategory is their one definition
  const traces = series.categories.map((c) => ({ type: "scatter", mode: "lines", stackgroup: "hours", name: c.name, x: t, y: series[c.name], line: { color: c.color, width: 1 } }));
  if (projected && finish && series.t.length) {
    traces.push({ type: "scatter", mode: "lines", name: "projection", x: [t[t.length - 1], new Date(finish * 1000)],
                  y: [cost.gpu_hours.total, projected], line: { dash: "dash", color: "#555" } });
  }
  chart("chart-gpu-hours", traces, { title: { text: "Device-hours burned, by category (stacked), and the projection" }, yaxis: { title: { text: "device-hours" } } });
  chart("chart-reference", [{ type: "bar", orientation: "h", y: ["burned", "projected at completion", "DeepSeek-V3 reference"],
    x: [cost.gpu_hours.total, projected || 0, ref.gpu_hours], text: [fmt.usd(cost.cost_usd), projected ? fmt.usd(projectedUsd) : "-", fmt.usd(ref.cost_usd)],
    textposition: "auto", marker: { color: ["#2e8b57", "#95a5a6", "#c0392b"] } }],
    { title: { text: "Against DeepSeek-V3's 2.788M GPU-hours (" + money(5.576e6) + "), log scale" }, xaxis: { type: "log", title: { text: "GPU-hours" } }, margin: { l: 170, r: 20, t: 36, b: 40 } });
}

// ---------------------------------------------------------------- events

async function eventsPage() {
  const events = await api("/api/events?limit=5000");
  const recent = events.slice(-300).reverse();
  setView(h("div", { id: "chart-events", class: "chart" }), h("h2", {}, `Events (${events.length})`),
    h("table", { id: "events-list" }, h("tr", {}, ["time", "kind", "job", "what", "who"].map((c) => h("th", {}, c))),
      recent.map((e) => h("tr", { "data-kind": e.kind }, h("td", {}, fmt.time(e.at)), h("td", { class: "event-kind" }, e.kind),
        h("td", {}, e.job_id ? h("a", { href: "#/jobs/" + e.job_id }, e.job_id) : "-"), h("td", {}, e.message), h("td", { class: "muted" }, e.actor)))));
  const kinds = [...new Set(events.map((e) => e.kind))].sort();
  chart("chart-events", [{ type: "scatter", mode: "markers", x: events.map((e) => new Date(e.at * 1000)), y: events.map((e) => e.kind),
    text: events.map((e) => e.message), hoverinfo: "text+x", marker: { size: 8, color: events.map((e) => kinds.indexOf(e.kind)), colorscale: "Viridis" } }],
    { title: { text: "Timeline" }, margin: { l: 170, r: 20, t: 36, b: 40 }, yaxis: { type: "category" } });
}

// ---------------------------------------------------------------- routing

function route() {
  const hash = location.hash.replace(/^#\/?/, "") || "cluster";
  const [page, arg] = hash.split("/");
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.route === page));
  if (page === "jobs" && arg) return () => jobPage(decodeURIComponent(arg));
  return { cluster, jobs, cost: costPage, events: eventsPage }[page] || cluster;
}

async function refreshNow() {
  const mine = ++routeToken;
  try {
    await Promise.all([renderSummary(), route()()]);
    if (mine === routeToken) document.getElementById("updated").textContent = new Date().toLocaleTimeString();
  } catch (e) {
    document.getElementById("updated").textContent = "failed: " + e.message;
  }
}

function start() {
  clearInterval(timer);
  refreshNow();
  timer = setInterval(() => { if (!document.hidden) refreshNow(); }, REFRESH_MS);
}

document.getElementById("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const input = document.getElementById("token");
  if (input.value.trim()) sessionStorage.setItem("orch-token", input.value.trim());
  input.value = "";
  renderOperator().then(refreshNow);
});
document.getElementById("token-clear").addEventListener("click", () => { sessionStorage.removeItem("orch-token"); renderOperator().then(refreshNow); });
window.addEventListener("hashchange", start);
renderOperator();
start();
