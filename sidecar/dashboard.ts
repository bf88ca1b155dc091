// The sidecar's small web page: the sidecar's id, its transactions with state,
// protocol, time in that state and age (stuck ones marked), filters, one
// transaction's timeline, and its peers. Plain HTML and script, no build.
// It says which state it is in (body[data-state]: loading, loaded,
// unauthorized, unreachable, error) and never shows stale data as fresh.
// Beyond loopback the API needs the admin token: the page asks for it and
// keeps it in sessionStorage (admin-auth.ts). `?stuckMs=N` overrides the
// one-minute threshold past which an unfinished transaction counts as stuck.
export const dashboardHtml = /* html */ `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>dtx sidecar</title>
<style>
  [hidden] { display: none !important; }
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1d2430; }
  h1 { font-size: 1.2rem; margin: 0 0 .75rem; }
  h2 { font-size: 1rem; margin: 1.5rem 0 .5rem; }
  #sidecar-meta { font-size: .85rem; font-weight: normal; color: #57606a; margin-left: .5rem; }
  #sidecar-meta.not-ready { color: #cf222e; }
  #status { margin: 0 0 .75rem; padding: .4rem .7rem; border-radius: 4px; background: #f3f6fa; color: #57606a; }
  body[data-state="unauthorized"] #status, body[data-state="unreachable"] #status, body[data-state="error"] #status { background: #ffebe9; color: #a40e26; font-weight: 600; }
  body[data-state="loading"] #content, body[data-state="unreachable"] #content, body[data-state="error"] #content { opacity: .45; }
  body[data-state="unauthorized"] #content { display: none; }
  #auth { margin: 0 0 1rem; display: flex; gap: .5rem; align-items: center; }
  #auth input { width: 22rem; }
  .bar { display: flex; gap: .75rem; align-items: center; margin-bottom: .75rem; }
  #attention { color: #cf222e; font-weight: 600; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; padding: .3rem .6rem; border-bottom: 1px solid #e3e6ea; }
  td.num { font-variant-numeric: tabular-nums; }
  tr.txn { cursor: pointer; }
  tr.txn:hover { background: #f3f6fa; }
  tr.txn[data-attention] { background: #ffebe9; box-shadow: inset 4px 0 #cf222e; }
  .flag { display: inline-block; margin-left: .4rem; padding: 0 .4rem; border-radius: 3px; background: #cf222e; color: #fff; font-size: .75rem; font-weight: 600; text-transform: uppercase; }
  .state { font-weight: 600; }
  .committed, .compensated, .up { color: #1a7f37; } .rolled_back, .connecting { color: #9a6700; } .failed, .down { color: #cf222e; }
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
<body data-state="loading">
<h1>dtx sidecar <span id="sidecar-id">…</span><span id="sidecar-meta"></span></h1>
<div id="status" role="status">loading…</div>
<form id="auth" hidden>
  <label>Admin token <input id="token" type="password" autocomplete="off" spellcheck="false"></label>
  <button type="submit">Use token</button>
</form>
<main id="content">
<div class="bar">
  <label>State <select id="state">
    <option value="">all</option>
    <option>active</option><option>preparing</option><option>prepared</option><option>committing</option>
    <option>committed</option><option>rolling_back</option><option>rolled_back</option>
    <option>compensating</option><option>compensated</option><option>failed</option>
  </select></label>
  <label>Name <input id="filter" placeholder="contains…"></label>
  <span id="count"></span>
  <span id="attention"></span>
</div>
<table>
  <thead><tr><th>Name</th><th>State</th><th>Protocol</th><th>In state</th><th>Age</th><th>Participants</th></tr></thead>
  <tbody id="rows"></tbody>
</table>
<section id="timeline" hidden>
  <h2 id="tl-title"></h2>
  <div id="tl-error" class="err"></div>
  <ol id="tl-events"></ol>
</section>
<section id="peers">
  <h2>Peers</h2>
  <table>
    <thead><tr><th>Id</th><th>URL</th><th>State</th><th>Since</th></tr></thead>
    <tbody id="peer-rows"></tbody>
  </table>
  <p id="no-peers" hidden>No peers: this sidecar was started without --peer and no peer has dialed it.</p>
</section>
</main>
<script>
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const duration = (ms) => { const s = Math.max(0, ms / 1000); return s < 60 ? s.toFixed(1) + " s" : s < 3600 ? (s / 60).toFixed(1) + " min" : (s / 3600).toFixed(1) + " h"; };
const age = (t) => (t ? duration(Date.now() - t) : "");
const time = (t) => new Date(t).toISOString().slice(11, 23);

const TOKEN_KEY = "dtx.adminToken";
const POLL_MS = 2000;
// Unfinished states a transaction should pass through quickly; past the threshold it is stuck. failed always needs an operator.
const PASSING_STATES = new Set(["preparing", "committing", "rolling_back", "compensating"]);
const params = new URLSearchParams(location.search);
const stuckMs = params.has("stuckMs") && Number(params.get("stuckMs")) >= 0 ? Number(params.get("stuckMs")) : 60000;

let sidecar;
let all = [];
let peers = [];
let loadedAt = 0;
let loads = 0;
let timer;

class ApiError extends Error {
  constructor(state, message) { super(message); this.state = state; }
}

async function api(path) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  let res;
  try {
    res = await fetch(path, { headers: token ? { authorization: "Bearer " + token } : {}, cache: "no-store" });
  } catch (e) {
    throw new ApiError("unreachable", "sidecar unreachable: " + location.host + " does not answer (" + e.message + ")");
  }
  const body = await res.json().catch(() => undefined);
  if (res.status === 401) throw new ApiError("unauthorized", "unauthorized: " + (body?.message ?? "this sidecar wants its admin token"));
  if (!res.ok || body === undefined) throw new ApiError("error", "error: " + (body?.code ? body.code + ": " + body.message : res.status + " " + res.statusText + " from " + path));
  return body;
}

function show(state, message) {
  document.body.dataset.state = state;
  $("status").textContent = message;
  $("auth").hidden = state !== "unauthorized";
  if (state === "unauthorized") $("token").focus();
  // The header's readiness is the last answer's only while answers come.
  if (sidecar && state !== "loaded" && state !== "loading") {
    $("sidecar-meta").textContent = "v" + sidecar.version + " · " + state;
    $("sidecar-meta").className = "not-ready";
  }
}

function failed(e) {
  if (!(e instanceof ApiError)) e = new ApiError("error", "error: " + e.message);
  if (e.state === "unauthorized") sessionStorage.removeItem(TOKEN_KEY);
  const stale = loadedAt && e.state !== "unauthorized" ? "; showing what it answered at " + time(loadedAt) : "";
  show(e.state, e.message + (e.state === "unreachable" ? "; retrying every " + POLL_MS / 1000 + " s" : "") + stale);
}

async function refresh() {
  clearTimeout(timer);
  const seq = ++loads;
  const state = $("state").value;
  try {
    const [me, txns, peerList] = await Promise.all([
      api("/v1/sidecar"),
      api("/v1/transactions" + (state ? "?state=" + encodeURIComponent(state) : "")),
      api("/v1/peers"),
    ]);
    if (seq !== loads) return; // a newer refresh (another filter) is under way
    sidecar = me;
    all = txns;
    peers = peerList;
    loadedAt = Date.now();
    renderSidecar();
    render();
    renderPeers();
    show("loaded", "updated " + time(loadedAt));
  } catch (e) {
    if (seq !== loads) return;
    failed(e);
  }
  // Without a token nothing will change: wait for one to be entered.
  if (document.body.dataset.state !== "unauthorized") timer = setTimeout(refresh, POLL_MS);
}

function renderSidecar() {
  $("sidecar-id").textContent = sidecar.id;
  $("sidecar-meta").textContent = "v" + sidecar.version + " · " + (sidecar.ready ? "ready" : "not ready");
  $("sidecar-meta").className = sidecar.ready ? "" : "not-ready";
  document.title = "dtx sidecar " + sidecar.id;
}

/** When the transaction entered its current state, from the timestamp that state starts at (or the latest before it). */
function enteredState(t) {
  const ts = t.timestamps || {};
  const first = (...xs) => xs.find((x) => x) ?? null;
  switch (t.state) {
    case "active": case "preparing": return first(ts.begun);
    case "prepared": return first(ts.prepared, ts.begun);
    case "committing": case "rolling_back": case "compensating": return first(ts.decided, ts.prepared, ts.begun);
    default: return first(ts.finished, ts.decided, ts.prepared, ts.begun);
  }
}

/** Why a transaction needs a look, or null when it looks healthy. */
function attentionOf(t, now) {
  if (t.state === "failed") return "needs operator";
  const since = enteredState(t);
  return PASSING_STATES.has(t.state) && since && now - since > stuckMs ? "stuck" : null;
}

function render() {
  const now = Date.now();
  const f = $("filter").value.trim();
  const shown = all.filter((t) => !f || t.name.includes(f));
  $("count").textContent = shown.length + " of " + all.length;
  let flagged = 0;
  $("rows").innerHTML = shown.map((t) => {
    const why = attentionOf(t, now);
    if (why) flagged++;
    const since = enteredState(t);
    return '<tr class="txn" data-name="' + esc(t.name) + '"' + (why ? ' data-attention="' + esc(why) + '"' : "") + "><td>" + esc(t.name) +
      '</td><td><span class="state ' + esc(t.state) + '">' + esc(t.state) + "</span>" + (why ? '<span class="flag">' + esc(why) + "</span>" : "") +
      "</td><td>" + esc(t.protocol ?? "") + '</td><td class="num in-state">' + (since ? duration(now - since) : "") + '</td><td class="num">' + age(t.timestamps?.begun) +
      "</td><td>" + (t.participants?.length ?? 0) + elsewhere(t) + "</td></tr>";
  }).join("");
  $("attention").textContent = flagged ? flagged + " need attention (stuck past " + duration(stuckMs) + ", or failed)" : "";
  for (const tr of document.querySelectorAll("tr.txn")) tr.onclick = () => openTimeline(tr.dataset.name);
}

function renderPeers() {
  $("no-peers").hidden = peers.length > 0;
  $("peer-rows").innerHTML = peers.map((p) =>
    '<tr class="peer" data-id="' + esc(p.id) + '"><td>' + esc(p.id) + "</td><td>" + esc(p.url ?? "(dialed us)") +
    '</td><td class="' + esc(p.state) + '"' + (p.lastError ? ' title="' + esc(p.lastError) + '"' : "") + ">" + esc(p.state) +
    '</td><td class="num">' + (p.since ? time(p.since) + " (" + age(p.since) + " ago)" : "") + "</td></tr>").join("");
}

// The other sidecars a transaction's participants live on: " (on B, C)", or nothing.
function elsewhere(t) {
  const ids = [...new Set((t.participants || []).map((p) => p.sidecar).filter((id) => id && id !== sidecar.id))];
  return ids.length ? " (on " + ids.map(esc).join(", ") + ")" : "";
}
const where = (p) => (p.sidecar && p.sidecar !== sidecar.id ? "@" + p.sidecar : "");

function eventsOf(t) {
  const ev = [];
  const ts = t.timestamps || {};
  if (ts.begun) ev.push({ at: ts.begun, what: "begin (" + (t.protocol ?? "?") + ")" });
  for (const p of t.participants || []) {
    if (p.steps) {
      for (const s of p.steps) ev.push({ at: s.at, what: p.participantId + where(p) + ": " + s.op + " → " + s.outcome, error: s.error });
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
  let t;
  try {
    t = await api("/v1/transactions/" + encodeURIComponent(name));
  } catch (e) {
    if (e instanceof ApiError && e.state !== "error") return failed(e);
    $("timeline").hidden = false;
    $("tl-title").textContent = name;
    $("tl-error").textContent = e.message;
    $("tl-events").innerHTML = "";
    return;
  }
  $("timeline").hidden = false;
  $("tl-title").textContent = t.name + " — " + t.state;
  $("tl-error").textContent = t.error ? "error: " + t.error : "";
  $("tl-events").innerHTML = eventsOf(t).map((e) =>
    '<li class="' + (e.error ? "error" : "") + '"><span class="when">' + time(e.at) + "</span>" + esc(e.what) + (e.error ? ' <span class="err">' + esc(e.error) + "</span>" : "") + "</li>").join("");
}

$("auth").onsubmit = (ev) => {
  ev.preventDefault();
  const token = $("token").value.trim();
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("token").value = "";
  show("loading", "loading…");
  refresh();
};
$("state").onchange = refresh;
$("filter").oninput = render;
refresh();
</script>
</body>
</html>
`;
