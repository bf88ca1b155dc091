// The sidecar's small web page: transactions with state, protocol and age,
// filters, and one transaction's timeline. Plain HTML and script, no build.
export const dashboardHtml = /* html */ `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>dtx sidecar</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1d2430; }
  h1 { font-size: 1.2rem; margin: 0 0 1rem; }
  .bar { display: flex; gap: .75rem; align-items: center; margin-bottom: .75rem; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; padding: .3rem .6rem; border-bottom: 1px solid #e3e6ea; }
  tr.txn { cursor: pointer; }
  tr.txn:hover { background: #f3f6fa; }
  .state { font-weight: 600; }
  .committed, .compensated { color: #1a7f37; } .rolled_back { color: #9a6700; } .failed { color: #cf222e; }
  .prepared, .preparing, .committing, .rolling_back, .compensating, .active { color: #0969da; }
  #timeline { margin-top: 1.5rem; }
  #timeline ol { list-style: none; padding: 0; border-left: 3px solid #d0d7de; margin-left: .5rem; }
  #timeline li { padding: .35rem .9rem; position: relative; }
  #timeline li::before { content: ""; position: absolute; left: -.5rem; top: .75rem; width: .6rem; height: .6rem; border-radius: 50%; background: #0969da; }
  #timeline li.error::before { background: #cf222e; }
  .when { color: #57606a; font-variant-numeric: tabular-nums; margin-right: .5rem; }
  .err { color: #cf222e; }
</style>
</head>
<body>
<h1>dtx sidecar <span id="sidecar"></span></h1>
<div class="bar">
  <label>State <select id="state">
    <option value="">all</option>
    <option>active</option><option>preparing</option><option>prepared</option><option>committing</option>
    <option>committed</option><option>rolling_back</option><option>rolled_back</option>
    <option>compensating</option><option>compensated</option><option>failed</option>
  </select></label>
  <label>Name <input id="filter" placeholder="contains…"></label>
  <span id="count"></span>
</div>
<table>
  <thead><tr><th>Name</th><th>State</th><th>Protocol</th><th>Age</th><th>Participants</th></tr></thead>
  <tbody id="rows"></tbody>
</table>
<section id="timeline" hidden>
  <h2 id="tl-title"></h2>
  <div id="tl-error" class="err"></div>
  <ol id="tl-events"></ol>
</section>
<script>
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const age = (t) => { if (!t) return ""; const s = Math.max(0, (Date.now() - t) / 1000); return s < 60 ? s.toFixed(1) + " s" : s < 3600 ? (s / 60).toFixed(1) + " min" : (s / 3600).toFixed(1) + " h"; };
const time = (t) => new Date(t).toISOString().slice(11, 23);
let all = [];

async function load() {
  const state = $("state").value;
  const res = await fetch("/v1/transactions" + (state ? "?state=" + encodeURIComponent(state) : ""));
  all = await res.json();
  render();
}

function render() {
  const f = $("filter").value.trim();
  const shown = all.filter((t) => !f || t.name.includes(f));
  $("count").textContent = shown.length + " of " + all.length;
  $("rows").innerHTML = shown.map((t) =>
    '<tr class="txn" data-name="' + esc(t.name) + '"><td>' + esc(t.name) + '</td><td class="state ' + esc(t.state) + '">' + esc(t.state) +
    "</td><td>" + esc(t.protocol ?? "") + "</td><td>" + age(t.timestamps?.begun) + "</td><td>" + (t.participants?.length ?? 0) + "</td></tr>").join("");
  for (const tr of document.querySelectorAll("tr.txn")) tr.onclick = () => openTimeline(tr.dataset.name);
}

function eventsOf(t) {
  const ev = [];
  const ts = t.timestamps || {};
  if (ts.begun) ev.push({ at: ts.begun, what: "begin (" + (t.protocol ?? "?") + ")" });
  for (const p of t.participants || []) {
    if (p.steps) {
      for (const s of p.steps) ev.push({ at: s.at, what: p.participantId + ": " + s.op + " → " + s.outcome, error: s.error });
    } else {
      ev.push({ at: ts.begun, what: "enlist " + p.branch + " on " + p.sidecar });
      if (p.vote) ev.push({ at: ts.prepared ?? ts.decided ?? ts.begun, what: "vote " + p.vote + " from " + p.branch, error: p.vote === "no" ? t.error : undefined });
    }
  }
  if (ts.prepared) ev.push({ at: ts.prepared, what: "prepared: every branch voted yes" });
  if (ts.decided) ev.push({ at: ts.decided, what: "decision: " + (["committing", "committed"].includes(t.state) ? "commit" : t.state === "compensated" || t.state === "compensating" ? "compensate" : "rollback") });
  for (const p of t.participants || []) if (!p.steps && p.acked && ts.finished) ev.push({ at: ts.finished, what: "ack from " + p.branch });
  if (ts.finished) ev.push({ at: ts.finished, what: "end: " + t.state, error: t.state === "failed" ? t.error : undefined });
  return ev.filter((e) => e.at).sort((a, b) => a.at - b.at);
}

async function openTimeline(name) {
  const t = await (await fetch("/v1/transactions/" + encodeURIComponent(name))).json();
  $("timeline").hidden = false;
  $("tl-title").textContent = t.name + " — " + t.state;
  $("tl-error").textContent = t.error ? "error: " + t.error : "";
  $("tl-events").innerHTML = eventsOf(t).map((e) =>
    '<li class="' + (e.error ? "error" : "") + '"><span class="when">' + time(e.at) + "</span>" + esc(e.what) + (e.error ? ' <span class="err">' + esc(e.error) + "</span>" : "") + "</li>").join("");
}

$("state").onchange = load;
$("filter").oninput = render;
fetch("/healthz").then(() => { $("sidecar").textContent = location.host; });
load();
setInterval(load, 2000);
</script>
</body>
</html>
`;
