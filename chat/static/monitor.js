// /monitor: a live view of /status (docs/pages.md). The data needs the admin token: the
// page asks for it and sends it as "Authorization: Bearer" (fetch, and a fetch-based
// reader of /status/events, since EventSource cannot set headers); never in a URL.
const $ = (id) => document.getElementById(id);
const PAGE = 100;
// Changes held for the next frame. A hidden tab runs no animation frame, so past this
// many distinct sessions they are dropped and the table is reloaded when shown again:
// the page's memory stays bounded however long it stays in the background.
const MAX_PENDING = 1024;
// Rows kept in "recently closed".
const CLOSED_ROWS = 20;
const STATES = ["connecting", "active", "idle", "closed"];
const COLORS = { active: "#15803d", idle: "#7c3aed", connecting: "#b45309" };

let token = null;
let trend = [];
let filters = { state: "", room: "", user: "" };
let offset = 0;
/** id -> the row's <tr> on the current page */
const rows = new Map();
let selected = null;
let dirty = new Map();
let stale = false;
let frame = 0;
let newOutside = 0;
/** The stream said the admin JWT expired: it is not reopened until a new sign-in. */
let expired = false;

function headers() {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  if (response.status === 401 || response.status === 403) throw Object.assign(new Error("token refused"), { status: response.status });
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  return response.json();
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

const clock = (iso) => (iso ? new Date(iso).toLocaleTimeString() : "");

// -- sign in -------------------------------------------------------------------------------

async function open() {
  try {
    // The first page of sessions is also the token's check (admin only, as /status is):
    // one read before the table, not two.
    await loadPage();
  } catch (error) {
    if (error.status) {
      $("login").classList.remove("hidden");
      $("board").classList.add("hidden");
      if (token) $("login-problem").textContent = "This token is not an admin token.";
      token = null;
      return;
    }
    throw error;
  }
  $("login").classList.add("hidden");
  $("board").classList.remove("hidden");
  expired = false;
  loadClosed();
  stream();
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  token = $("token").value.trim() || null;
  $("token").value = "";
  $("login-problem").textContent = "";
  open();
});

// -- the event stream ----------------------------------------------------------------------

function streamState(state, text) {
  $("stream").dataset.state = state;
  $("stream").textContent = text;
}

async function stream() {
  let attempt = 0;
  for (;;) {
    try {
      const response = await fetch("/status/events", { headers: headers(), cache: "no-store" });
      if (response.status === 401 || response.status === 403) {
        token = null;
        open();
        return;
      }
      if (!response.ok || !response.body) throw new Error(String(response.status));
      streamState("live", "live");
      if (attempt) loadPage(); // changes made while away are not replayed: reload the page
      attempt = 0;
      await read(response.body.getReader());
    } catch (error) {
      // a lost stream: reconnect below
    }
    if (expired) return;
    const delay = Math.round(Math.random() * Math.min(10000, 1000 * 2 ** attempt)) + 500;
    attempt += 1;
    streamState("reconnecting", `reconnecting in ${Math.ceil(delay / 1000)} s`);
    await new Promise((resolve) => setTimeout(resolve, delay));
  }
}

async function read(reader) {
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      let data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) handle(name, JSON.parse(data));
    }
  }
}

function handle(name, data) {
  if (name === "hello") {
    $("node").textContent = `node ${data.node}`;
    trend = data.trend;
    drawChart();
  } else if (name === "summary") summary(data);
  else if (name === "sessions") {
    if (!stale) for (const view of data.sessions) dirty.set(view.id, view);
    if (dirty.size > MAX_PENDING) resync();
    else if (!frame) frame = requestAnimationFrame(applyChanges);
  } else if (name === "resync") resync();
  else if (name === "expired") {
    // The server ends the stream at the admin JWT's exp: ask for a new token.
    expired = true;
    token = null;
    $("login").classList.remove("hidden");
    $("board").classList.add("hidden");
    $("login-problem").textContent = `${data.detail}.`;
  }
}

// Reload what the page shows at the next frame (at once when visible), forgetting the
// changes held: a resync from the server, or too many changes held while hidden.
function resync() {
  dirty = new Map();
  stale = true;
  if (!frame) frame = requestAnimationFrame(applyChanges);
}

// -- summary, chart, rooms, cluster -------------------------------------------------------

function summary(data) {
  const sample = data.sample;
  for (const state of STATES) $(`n-${state}`).textContent = sample.sessions[state] ?? 0;
  const last = trend[trend.length - 1];
  if (last && sample.at > last.at) {
    const seconds = sample.at - last.at;
    $("rate-in").textContent = ((sample.messages_in - last.messages_in) / seconds).toFixed(1);
    $("rate-out").textContent = ((sample.messages_out - last.messages_out) / seconds).toFixed(1);
  }
  if (!last || sample.at > last.at) trend.push(sample);
  if (trend.length > 300) trend.splice(0, trend.length - 300);
  $("accepted").textContent = data.totals.accepted;
  $("rejected").textContent = data.totals.rejected;
  const broker = $("broker");
  broker.textContent = `broker ${data.broker.healthy ? "healthy" : "DOWN"}${data.draining ? " · draining" : ""}`;
  broker.className = `badge ${data.broker.healthy ? "ok" : "bad"}`;
  broker.title = data.broker.url;
  const tbody = $("rooms");
  tbody.replaceChildren(...data.rooms.map((r) => {
    const tr = el("tr", { class: "session" }, el("td", { textContent: r.room }), el("td", { textContent: String(r.members) }));
    tr.onclick = () => setFilters({ ...filters, room: r.room });
    return tr;
  }));
  $("rooms-more").firstChild.textContent = data.rooms_total > data.rooms.length ? `the ${data.rooms.length} busiest of ${data.rooms_total} rooms` : "";
  if (data.nodes !== undefined) {
    const cluster = $("cluster");
    if (data.nodes === null) cluster.replaceChildren(el("p", { class: "muted", textContent: "one process (memory broker): no cluster view" }));
    else cluster.replaceChildren(el("table", {}, ...data.nodes.map((n) => el("tr", {},
      el("td", { textContent: n.node }), el("td", { textContent: `${n.sessions} sessions` }), el("td", { class: "muted", textContent: clock(n.last_seen) })))));
  }
  drawChart();
}

function drawChart() {
  const canvas = $("chart");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 700;
  const height = canvas.clientHeight || 160;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  g.clearRect(0, 0, width, height);
  const points = trend.slice(-300);
  const top = Math.max(1, ...points.map((p) => (p.sessions.active || 0) + (p.sessions.idle || 0) + (p.sessions.connecting || 0)));
  g.strokeStyle = "#e3e6eb";
  g.fillStyle = "#667085";
  g.font = "11px system-ui";
  for (const fraction of top >= 2 ? [0, 0.5, 1] : [0, 1]) {
    const y = height - 14 - fraction * (height - 24);
    g.beginPath(); g.moveTo(28, y); g.lineTo(width, y); g.stroke();
    g.fillText(String(Math.round(top * fraction)), 0, y + 4);
  }
  if (points.length < 2) return;
  const t0 = points[0].at;
  const span = Math.max(1, points[points.length - 1].at - t0);
  const x = (p) => 28 + ((p.at - t0) / span) * (width - 30);
  const y = (v) => height - 14 - (v / top) * (height - 24);
  // Stacked areas: connecting on idle on active.
  let base = points.map(() => 0);
  for (const state of ["active", "idle", "connecting"]) {
    const upper = points.map((p, i) => base[i] + (p.sessions[state] || 0));
    g.beginPath();
    points.forEach((p, i) => (i ? g.lineTo(x(p), y(upper[i])) : g.moveTo(x(p), y(upper[i]))));
    for (let i = points.length - 1; i >= 0; i--) g.lineTo(x(points[i]), y(base[i]));
    g.closePath();
    g.fillStyle = COLORS[state] + "55";
    g.fill();
    g.strokeStyle = COLORS[state];
    g.beginPath();
    points.forEach((p, i) => (i ? g.lineTo(x(p), y(upper[i])) : g.moveTo(x(p), y(upper[i]))));
    g.stroke();
    base = upper;
  }
  $("chart-range").textContent = `last ${span < 120 ? `${Math.round(span)} s` : `${Math.round(span / 60)} min`} · max ${top}`;
}

// -- the sessions table: one page, patched in place ---------------------------------------

function query() {
  const params = new URLSearchParams({ limit: String(PAGE), offset: String(offset) });
  for (const [key, value] of Object.entries(filters)) if (value) params.set(key, value);
  return params.toString();
}

function matches(view) {
  if (filters.state && view.state !== filters.state) return false;
  if (filters.room && !view.rooms.includes(filters.room)) return false;
  if (filters.user && view.user !== filters.user) return false;
  return true;
}

async function loadPage() {
  const { sessions } = await api(`/status/sessions?${query()}`);
  rows.clear();
  newOutside = 0;
  $("pending-new").textContent = "";
  $("sessions").replaceChildren(...sessions.map((view) => row(view)));
  $("page").textContent = `page ${offset / PAGE + 1}`;
  $("prev").disabled = offset === 0;
  $("next").disabled = sessions.length < PAGE;
}

async function loadClosed() {
  const { sessions } = await api(`/status/sessions?state=closed&limit=${CLOSED_ROWS}`);
  $("closed").replaceChildren(...sessions.map(closedRow));
}

function closedRow(view) {
  const tr = el("tr", { class: "session" },
    el("td", { textContent: clock(view.closed_at) }), el("td", { textContent: view.user }),
    el("td", { textContent: view.close_code ?? "" }), el("td", { class: "wrap", textContent: view.close_reason ?? "" }),
    el("td", { textContent: view.closed_by ?? "" }));
  tr.dataset.session = view.id;
  tr.onclick = () => detail(view.id);
  return tr;
}

function stateText(view) {
  if (view.state === "closed") return `closed · ${view.close_reason ?? ""}`;
  return view.closing ? `${view.state} · closing` : view.state;
}

function fill(tr, view) {
  const cells = [
    view.id, view.user, stateText(view), view.rooms.join(" "), view.remote, clock(view.connected_at),
    `${Math.round(view.idle_s)} s`, `${view.messages_in}/${view.messages_out}`,
  ];
  const tds = tr.children;
  cells.forEach((text, i) => (tds[i].textContent = text));
  tds[2].className = `state ${view.state}`;
  tr.dataset.state = view.state;
  const button = tds[8].firstChild;
  button.disabled = view.state === "closed" || view.closing;
}

function row(view) {
  const tr = el("tr", { class: "session" });
  for (let i = 0; i < 8; i++) tr.append(el("td"));
  const button = el("button", { type: "button", class: "danger", textContent: "Disconnect" });
  button.onclick = (event) => {
    event.stopPropagation();
    disconnect(view.id, button);
  };
  tr.append(el("td", {}, button));
  tr.dataset.session = view.id;
  tr.onclick = () => detail(view.id);
  fill(tr, view);
  rows.set(view.id, tr);
  return tr;
}

// A changed row is highlighted for FLASH_MS. A class added now and removed by one timer:
// no forced layout per row (restarting a CSS animation needs one: 30 rows changed at once
// took 200 ms of CPU) and no repaint every frame (an animated background repaints the
// table 60 times a second: the page was busy 36 % of the time; docs/pages.md).
const FLASH_MS = 1200;
const litAt = new Map();
let unlight = 0;

function flash(tr) {
  tr.classList.add("flash");
  litAt.set(tr, performance.now());
  if (!unlight) unlight = setTimeout(dim, FLASH_MS);
}

function dim() {
  unlight = 0;
  const horizon = performance.now() - FLASH_MS + 50;
  for (const [tr, at] of litAt) {
    if (at > horizon) continue;
    tr.classList.remove("flash");
    litAt.delete(tr);
  }
  if (litAt.size) unlight = setTimeout(dim, FLASH_MS / 4);
}

function applyChanges() {
  frame = 0;
  if (stale) {
    stale = false;
    loadPage();
    loadClosed();
    return;
  }
  const changes = dirty;
  dirty = new Map();
  const tbody = $("sessions");
  const closed = [];
  let outside = 0;
  for (const view of changes.values()) {
    const tr = rows.get(view.id);
    if (view.gone) {
      if (tr) tr.remove();
      rows.delete(view.id);
      continue;
    }
    if (view.state === "closed") closed.push(view);
    if (tr) {
      fill(tr, view); // kept even when it no longer matches: it is what changed
      flash(tr);
    } else if (matches(view)) {
      if (offset === 0 && rows.size < PAGE) {
        const added = row(view);
        tbody.append(added);
        flash(added);
      } else outside += 1;
    }
    if (view.id === selected) detail(view.id);
  }
  if (outside) {
    newOutside += outside;
    $("pending-new").textContent = `${newOutside} more changed on other pages`;
  }
  // Only the newest ones are shown: rows for the others would be made to be removed.
  const list = $("closed");
  list.prepend(...closed.slice(-CLOSED_ROWS).reverse().map(closedRow));
  while (list.children.length > CLOSED_ROWS) list.lastChild.remove();
}

async function detail(id) {
  selected = id;
  const box = $("detail");
  let view;
  try {
    view = await api(`/status/sessions/${encodeURIComponent(id)}`);
  } catch (error) {
    box.replaceChildren(el("small", { textContent: `${id}: no longer retained` }));
    return;
  }
  const dl = el("dl", { class: "kv" });
  for (const [key, value] of [["session", view.id], ["user", view.user], ["state", stateText(view)], ["protocol", view.protocol],
    ["rooms", view.rooms.join(", ")], ["remote", view.remote], ["node", view.node], ["connected", clock(view.connected_at)],
    ["last activity", clock(view.last_activity_at)], ["queue", view.queue], ["close", view.close_code ? `${view.close_code} ${view.close_reason} by ${view.closed_by}` : ""]]) {
    dl.append(el("dt", { textContent: key }), el("dd", { textContent: String(value ?? "") }));
  }
  const history = el("ol", { class: "history" }, ...view.history.map((h) => el("li", { textContent: `${clock(h.at)}  ${h.state} · ${h.reason}` })));
  box.replaceChildren(dl, el("h2", { class: "gap", textContent: "History" }), history);
}

async function disconnect(id, button) {
  button.disabled = true;
  try {
    await api(`/api/sessions/${encodeURIComponent(id)}/disconnect`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ reason: "Disconnected by an operator from the monitor.", reconnect: false }),
    });
  } catch (error) {
    button.disabled = false;
    button.title = error.message;
  }
}

function setFilters(next) {
  filters = next;
  offset = 0;
  $("f-state").value = filters.state;
  $("f-room").value = filters.room;
  $("f-user").value = filters.user;
  loadPage();
}

$("filters").addEventListener("submit", (event) => {
  event.preventDefault();
  setFilters({ state: $("f-state").value, room: $("f-room").value.trim(), user: $("f-user").value.trim() });
});
$("f-clear").addEventListener("click", () => setFilters({ state: "", room: "", user: "" }));
$("prev").addEventListener("click", () => { offset = Math.max(0, offset - PAGE); loadPage(); });
$("next").addEventListener("click", () => { offset += PAGE; loadPage(); });
window.addEventListener("resize", () => drawChart());

open();
