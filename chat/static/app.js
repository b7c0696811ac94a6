// /app: a chat page on chat.js (docs/pages.md). No framework: the DOM, kept small.
import { ChatClient } from "/static/chat.js";

const $ = (id) => document.getElementById(id);
const NAME = /^[A-Za-z0-9_.-]{1,64}$/;
const KEEP = 500; // messages kept per room in the page

let chat = null;
let current = null;
/** room -> {items: [{seq, id, user, text, ts}], unread, notices: []} */
const rooms = new Map();
/** id -> {room, text}: sends shown as pending until their message arrives */
const pending = new Map();
let countdown = null;

function roomView(room) {
  if (!rooms.has(room)) rooms.set(room, { items: [], unread: 0 });
  return rooms.get(room);
}

function time(ts) {
  return new Date(ts * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

// -- connection state ----------------------------------------------------------------------

function showState(state, text) {
  const badge = $("state");
  badge.dataset.state = state;
  badge.textContent = text;
}

function onState({ detail }) {
  clearInterval(countdown);
  if (detail.state === "connecting") showState("connecting", "connecting…");
  else if (detail.state === "live") showState("live", "live");
  else if (detail.state === "reconnecting") {
    if (!detail.delay) {
      showState("reconnecting", "reconnecting…");
      return;
    }
    const until = Date.now() + detail.delay;
    const tick = () => {
      const left = Math.max(0, Math.ceil((until - Date.now()) / 1000));
      showState("reconnecting", `reconnecting in ${left} s`);
    };
    tick();
    countdown = setInterval(tick, 250);
  } else if (detail.state === "closed" && detail.refused) {
    showState("closed", "not connected");
    signInAgain(detail.reason);
  } else if (detail.state === "closed") {
    showState("closed", `disconnected${detail.reason ? `: ${detail.reason}` : ""}`);
    notice(current, `Disconnected${detail.reason ? `: ${detail.reason}` : ""}.`, true);
  }
}

/** The client gave up before any welcome (an expired token, a server down): ask again. */
function signInAgain(reason) {
  $("login").classList.remove("hidden");
  $("chat").classList.add("hidden");
  $("signout").classList.add("hidden");
  $("login-problem").textContent = `Could not connect: ${reason}. Sign in again${/token/.test(reason) ? " with a new token" : ""}.`;
}

function onRecovery({ detail }) {
  if (detail.lost.length) {
    showState("lost", `could not recover ${detail.lost.join(", ")}`);
    for (const room of detail.lost) notice(room, "Messages may be missing here: the server could not recover them.", true);
  } else {
    showState("recovered", "recovered");
    for (const room of detail.recovered) notice(room, "Reconnected: nothing lost (anything missed follows).");
  }
}

// -- rooms, members, messages --------------------------------------------------------------

function notice(room, text, bad = false) {
  if (!room) return;
  roomView(room).items.push({ notice: text, bad });
  if (room === current) renderMessages();
}

function renderRooms() {
  const list = $("rooms");
  list.replaceChildren();
  for (const room of chat.rooms.keys()) {
    const view = roomView(room);
    const button = el("button", { type: "button", class: "room", textContent: `# ${room}` });
    button.setAttribute("aria-current", String(room === current));
    button.dataset.room = room;
    if (view.unread) button.append(" ", el("span", { class: "unread", textContent: String(view.unread) }));
    button.onclick = () => select(room);
    const leave = el("button", { type: "button", class: "leave", title: `Leave ${room}`, textContent: "×" });
    leave.disabled = chat.rooms.size < 2;
    leave.onclick = () => {
      chat.leave(room);
      rooms.delete(room);
      if (current === room) current = chat.rooms.keys().next().value;
      renderAll();
    };
    list.append(el("li", {}, button, leave));
  }
}

function renderMembers() {
  const list = $("members");
  list.replaceChildren();
  for (const user of chat.members(current)) {
    list.append(el("li", { class: user === chat.user ? "me" : "", textContent: user }));
  }
}

function messageItem(item) {
  if (item.notice) return el("li", { class: item.bad ? "notice bad" : "notice", textContent: item.notice });
  const mine = item.user === chat.user;
  const li = el(
    "li",
    { class: `msg${mine ? " mine" : ""}${item.pending ? " pending" : ""}`, "data-seq": item.seq ?? "", "data-id": item.id ?? "" },
    el("div", { class: "meta" }, el("span", { class: "user", textContent: item.user }),
      el("time", { class: "time", textContent: item.pending ? "sending…" : time(item.ts) })),
    el("div", { class: "text", textContent: item.text }),
  );
  return li;
}

function renderMessages() {
  const list = $("messages");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  const view = roomView(current);
  const items = [...view.items];
  for (const [id, send] of pending) if (send.room === current) items.push({ ...send, id, user: chat.user, pending: true });
  list.replaceChildren(...items.map(messageItem));
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function renderAll() {
  renderRooms();
  renderMembers();
  renderMessages();
}

function select(room) {
  current = room;
  roomView(room).unread = 0;
  renderAll();
  $("text").focus();
}

function onMessage({ detail: message }) {
  const view = roomView(message.room);
  view.items.push(message);
  if (view.items.length > KEEP) view.items.splice(0, view.items.length - KEEP);
  pending.delete(message.id);
  if (message.room === current) renderMessages();
  else {
    view.unread += 1;
    renderRooms();
  }
}

// -- sign in and out -----------------------------------------------------------------------

function start(options) {
  // Signing in again after a refusal: the old client is closed for good already.
  if (chat && chat.state !== "closed") chat.close();
  rooms.clear();
  pending.clear();
  chat = new ChatClient(options);
  current = options.rooms[0];
  chat.addEventListener("state", onState);
  chat.addEventListener("recovery", onRecovery);
  chat.addEventListener("message", onMessage);
  chat.addEventListener("welcome", ({ detail }) => {
    $("me").textContent = detail.user;
  });
  chat.addEventListener("joined", ({ detail }) => {
    if (detail.renewed && !detail.recovered) notice(detail.room, "The room started a new run: earlier messages may be missing.", true);
    renderAll();
  });
  chat.addEventListener("members", () => renderMembers());
  chat.addEventListener("left", ({ detail }) => {
    if (!detail.code) return;
    // Refused for good (forbidden): the client dropped the room.
    rooms.delete(detail.room);
    if (current === detail.room) current = chat.rooms.keys().next().value || null;
    notice(current, `Could not join ${detail.room}: ${detail.detail}`, true);
    renderAll();
  });
  chat.addEventListener("presence", ({ detail }) => {
    notice(detail.room, `${detail.user} ${detail.event === "join" ? "joined" : "left"}`);
    if (detail.room === current) renderMembers();
  });
  chat.addEventListener("error", ({ detail }) => {
    // Retried ones are the client's business; a refused room is told by "left".
    if (!detail.retrying && !detail.room) notice(current, `Refused: ${detail.detail}`, true);
  });
  chat.addEventListener("bye", ({ detail }) => {
    if (detail.detail) notice(current, detail.detail, true);
  });
  $("login").classList.add("hidden");
  $("chat").classList.remove("hidden");
  $("signout").classList.remove("hidden");
  renderAll();
  chat.connect();
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  const name = $("name").value.trim();
  const token = $("token").value.trim();
  const room = $("first-room").value.trim() || "lobby";
  const problem = $("login-problem");
  if (!token && !NAME.test(name)) {
    problem.textContent = "Pick a name of letters, digits, _ . or - (or paste a token).";
    return;
  }
  if (!NAME.test(room)) {
    problem.textContent = "A room name is letters, digits, _ . or -.";
    return;
  }
  problem.textContent = "";
  // The name is remembered for next time; a token never is (it stays in this page's memory).
  if (name) localStorage.setItem("chat.name", name);
  $("token").value = "";
  start(token ? { token, rooms: [room] } : { user: name, rooms: [room] });
});

$("signout").addEventListener("click", () => {
  chat.close();
  location.reload();
});

$("join").addEventListener("submit", (event) => {
  event.preventDefault();
  const room = $("join-room").value.trim();
  if (!NAME.test(room)) return;
  $("join-room").value = "";
  // A refusal is told by the client's "left" event; leaving it meanwhile needs no word.
  chat.join(room).then(() => renderAll(), () => {});
  select(room);
});

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("text").value;
  if (!text.trim() || !current) return;
  $("text").value = "";
  const room = current;
  const id = chat.newId();
  pending.set(id, { room, text });
  renderMessages();
  chat.send(room, text, id).catch((error) => {
    pending.delete(id);
    if (chat.rooms.has(room)) notice(room, `Not sent: ${error.message}`, true);
    else if (error.code !== "left") notice(current, `Not sent to ${room}: ${error.message}`, true);
  });
});

$("name").value = localStorage.getItem("chat.name") || "";
