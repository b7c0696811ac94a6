// chat.js: a browser client for the chat server's chat.v1 protocol (docs/protocol.md).
// An ES module with no build step and no dependency; served by the server at
// /static/chat.js. Usage and events: docs/pages.md.
//
//   import { ChatClient } from "/static/chat.js";
//   const chat = new ChatClient({ user: "alice", rooms: ["lobby"] });
//   chat.addEventListener("message", (e) => console.log(e.detail));
//   chat.connect();
//   await chat.send("lobby", "hi");        // resolves with the ack, retried until acked
//
// The rules (the same as the Python client's):
// - heartbeats: every server "ping" is answered "pong"; a connection silent for
//   longer than heartbeat interval + timeout (+ slack) is presumed dead and dropped.
// - reconnect: after a lost connection, with exponential backoff and full jitter,
//   never sooner than bye.retry_after_ms; never after close 1000, 1003, 1008, 1009,
//   4500-4999 or a bye with reconnect: false (README, Close codes and refusals).
// - recovery: every room is rejoined with since (its last seq) and epoch; missed
//   messages are delivered once, in seq order; a room whose gap could not be
//   recovered is reported ("recovery" event, lost).
// - sends carry an id; a send is retried with the same id after an "unavailable"
//   error or a lost connection, until its ack (the server deduplicates by id).
// - a token goes in the bearer.<jwt> subprotocol, never in the URL.

/** Close codes after which the client never reconnects on its own. */
export const FINAL_CLOSE_CODES = new Set([1000, 1003, 1008, 1009]);

/** Whether to reconnect after close `code`, given the `bye` frame before it (or null). */
export function shouldReconnect(code, bye) {
  if (bye && bye.reconnect === false) return false;
  if (FINAL_CLOSE_CODES.has(code)) return false;
  if (code >= 4500 && code <= 4999) return false;
  return true;
}

/**
 * Milliseconds to wait before reconnect attempt `attempt` (0-based): "full jitter",
 * a uniform draw in [0, min(max, base * 2^attempt)], never below `floor`
 * (bye.retry_after_ms, itself jittered by the server).
 */
export function backoffDelay(attempt, { base = 500, max = 30000, floor = 0 } = {}, random = Math.random) {
  const ceiling = Math.min(max, base * 2 ** Math.min(attempt, 30));
  return Math.max(floor, Math.round(random() * ceiling));
}

/** A fresh prefix for send ids, so ids stay unique per user across tabs and reloads. */
function idPrefix() {
  const bytes = new Uint8Array(6);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Errors after which a send with the same id is tried again. */
const RETRIED_ERRORS = new Set(["unavailable", "rate_limited"]);

/**
 * One logical chat connection that outlives its WebSockets.
 *
 * Events (CustomEvent, payload in `event.detail`):
 * - "state": {state, delay, attempt, code, reason}: state is "connecting", "live",
 *   "reconnecting" (delay ms until the next attempt) or "closed" (for good).
 * - "welcome": the server's welcome frame (session, user, node, heartbeat, limits).
 * - "joined": {room, seq, epoch, recovered, members, resumed}: a room (re)joined.
 * - "message": a message frame (room, seq, id, user, text, ts), each seq once, in order.
 * - "presence": {room, event, user, members} after a member list changed.
 * - "members": {room, members}: the room's member list was replaced.
 * - "recovery": {recovered: [rooms], lost: [rooms]} once every room is back after a reconnect.
 * - "left": {room}. "error": an error frame not tied to a pending send. "bye": the bye frame.
 */
export class ChatClient extends EventTarget {
  /**
   * @param {object} options
   * @param {string} [options.url] ws(s)://host[:port]; default: this page's host.
   * @param {string} [options.user] the user name (open mode).
   * @param {string} [options.token] a JWT (JWT mode), sent as the bearer.<jwt> subprotocol.
   * @param {string[]} [options.rooms] rooms to join (at least one: the first goes in the URL).
   * @param {number} [options.backoffBase] first backoff ceiling, ms (500).
   * @param {number} [options.backoffMax] largest backoff ceiling, ms (30000).
   * @param {number} [options.maxSendAttempts] tries per send before it is rejected (20).
   * @param {Function} [options.WebSocket] a WebSocket constructor (tests).
   */
  constructor(options = {}) {
    super();
    const here = typeof location !== "undefined" ? location : null;
    this.url = options.url || (here ? `${here.protocol === "https:" ? "wss:" : "ws:"}//${here.host}` : "");
    this.user = options.user || null;
    this.token = options.token || null;
    this.backoff = { base: options.backoffBase ?? 500, max: options.backoffMax ?? 30000 };
    this.maxSendAttempts = options.maxSendAttempts ?? 20;
    this.WebSocket = options.WebSocket || globalThis.WebSocket;
    /** @type {Map<string, {seq: number|null, epoch: string|null, members: Set<string>, joined: boolean}>} */
    this.rooms = new Map();
    for (const room of options.rooms || []) this._room(room);
    this.home = (options.rooms || [])[0] || null;
    this.state = "idle";
    this.session = null;
    this.welcome = null;
    this.attempt = 0;
    this._ws = null;
    this._bye = null;
    this._timer = null;
    this._watchdog = null;
    this._stopped = true;
    this._resuming = false;
    this._awaiting = new Set();
    this._recovery = { recovered: [], lost: [] };
    this._prefix = idPrefix();
    this._counter = 0;
    /** Sends not acknowledged yet, by id: {room, text, resolve, reject, attempts, timer}. */
    this._pending = new Map();
    /** Joins not answered yet, by room: [resolve, reject]. */
    this._joining = new Map();
  }

  /** Open the connection (and keep it open until close() or a final close). */
  connect() {
    if (!this._stopped) return;
    if (!this.home) throw new Error("ChatClient needs at least one room");
    this._stopped = false;
    this.attempt = 0;
    this._open();
  }

  /** Close for good: no reconnect; pending sends are rejected. */
  close() {
    this._stopped = true;
    clearTimeout(this._timer);
    clearTimeout(this._watchdog);
    if (this._ws) this._ws.close(1000, "client closed");
    this._ws = null;
    this._failPending(new Error("client closed"));
    this._setState("closed", { code: 1000, reason: "client closed" });
  }

  /** Join `room`; resolves with its joined frame. Remembered for reconnects. */
  join(room) {
    const known = this.rooms.get(room);
    if (known && known.joined) return Promise.resolve({ room, seq: known.seq, epoch: known.epoch });
    this._room(room);
    if (!this.home) this.home = room;
    return new Promise((resolve, reject) => {
      this._joining.set(room, [resolve, reject]);
      if (this.state === "live") this._sendJoin(room);
    });
  }

  /** Leave `room` (forgotten for reconnects). */
  leave(room) {
    this.rooms.delete(room);
    if (this.home === room) this.home = this.rooms.keys().next().value || room;
    if (this.state === "live") this._write({ type: "leave", room });
  }

  /**
   * Send `text` to `room`; resolves with the ack ({id, room, seq}) once the server has
   * it, retrying with the same id after "unavailable" or a lost connection. Rejects
   * after a refusal (not_joined, forbidden, bad_request), close() or maxSendAttempts.
   */
  send(room, text, id = this.newId()) {
    return new Promise((resolve, reject) => {
      this._pending.set(id, { room, text, resolve, reject, attempts: 0, timer: null });
      this._trySend(id);
    });
  }

  /** A fresh send id, unique for this user (a random prefix per client and a counter). */
  newId() {
    return `${this._prefix}-${++this._counter}`;
  }

  /** Replace the session's JWT (before it expires); also used by later reconnects. */
  refresh(token) {
    this.token = token;
    if (this.state === "live") this._write({ type: "refresh", token, id: `refresh-${++this._counter}` });
  }

  /** The members of `room` as a sorted array. */
  members(room) {
    const known = this.rooms.get(room);
    return known ? [...known.members].sort() : [];
  }

  // -- internals ----------------------------------------------------------------------

  _room(room) {
    if (!this.rooms.has(room)) this.rooms.set(room, { seq: null, epoch: null, members: new Set(), joined: false });
    return this.rooms.get(room);
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _setState(state, extra = {}) {
    this.state = state;
    this._emit("state", { state, attempt: this.attempt, ...extra });
  }

  _open() {
    const first = this.rooms.has(this.home) ? this.home : this.rooms.keys().next().value || this.home;
    const known = this._room(first);
    const query = new URLSearchParams();
    if (this.user && !this.token) query.set("user", this.user);
    if (known.seq !== null) {
      query.set("since", String(known.seq));
      if (known.epoch) query.set("epoch", known.epoch);
    }
    const protocols = ["chat.v1.batch", "chat.v1"];
    if (this.token) protocols.push(`bearer.${this.token}`);
    const search = query.toString();
    this._resuming = this.session !== null;
    this._bye = null;
    this._recovery = { recovered: [], lost: [] };
    this._awaiting = new Set(this.rooms.keys());
    for (const room of this.rooms.values()) room.joined = false;
    this._first = first;
    this._setState(this._resuming ? "reconnecting" : "connecting", { delay: 0 });
    let ws;
    try {
      ws = new this.WebSocket(`${this.url}/ws/${encodeURIComponent(first)}${search ? `?${search}` : ""}`, protocols);
    } catch (error) {
      this._lost(1006, String(error));
      return;
    }
    this._ws = ws;
    ws.onmessage = (event) => {
      if (ws !== this._ws) return;
      this._arm();
      for (const line of String(event.data).split("\n")) {
        if (line) this._frame(JSON.parse(line));
      }
    };
    ws.onclose = (event) => {
      if (ws !== this._ws) return;
      this._lost(event.code, event.reason);
    };
    ws.onerror = () => {};
  }

  /** (Re)arm the dead-connection watchdog from the welcome's heartbeat settings. */
  _arm() {
    clearTimeout(this._watchdog);
    const beat = this.welcome && this.welcome.heartbeat;
    const ms = beat ? (beat.interval + beat.timeout) * 1000 + 5000 : 60000;
    const ws = this._ws;
    this._watchdog = setTimeout(() => {
      if (ws === this._ws) {
        ws.close(4000, "no frame from the server");
        this._lost(4001, "no heartbeat from the server");
      }
    }, ms);
  }

  _lost(code, reason) {
    clearTimeout(this._watchdog);
    this._ws = null;
    for (const entry of this._pending.values()) clearTimeout(entry.timer);
    if (this._stopped) return;
    const bye = this._bye;
    if (!shouldReconnect(code, bye)) {
      this._stopped = true;
      this._failPending(new Error(`closed ${code}${bye ? ` (${bye.reason})` : ""}`));
      this._setState("closed", { code, reason: (bye && (bye.detail || bye.reason)) || reason, bye });
      return;
    }
    const floor = bye && bye.retry_after_ms ? bye.retry_after_ms : 0;
    const delay = backoffDelay(this.attempt, { ...this.backoff, floor });
    this.attempt += 1;
    this._setState("reconnecting", { delay, code, reason: (bye && bye.reason) || reason, bye });
    this._timer = setTimeout(() => this._open(), delay);
  }

  _write(frame) {
    if (!this._ws || this._ws.readyState !== 1) return false;
    this._ws.send(JSON.stringify(frame));
    return true;
  }

  _sendJoin(room) {
    const known = this._room(room);
    const frame = { type: "join", room, id: `join:${room}` };
    if (known.seq !== null) {
      frame.since = known.seq;
      if (known.epoch) frame.epoch = known.epoch;
    }
    this._write(frame);
  }

  _trySend(id) {
    const entry = this._pending.get(id);
    if (!entry) return;
    const known = this.rooms.get(entry.room);
    // Sent once the room is joined on the current connection (see _joined).
    if (this.state !== "live" || !known || !known.joined) return;
    entry.attempts += 1;
    if (entry.attempts > this.maxSendAttempts) {
      this._pending.delete(id);
      entry.reject(new Error(`send ${id} not acknowledged after ${this.maxSendAttempts} attempts`));
      return;
    }
    this._write({ type: "send", room: entry.room, text: entry.text, id });
  }

  _failPending(error) {
    for (const [id, entry] of this._pending) {
      clearTimeout(entry.timer);
      entry.reject(error);
      this._pending.delete(id);
    }
    for (const [room, [, reject]] of this._joining) {
      reject(error);
      this._joining.delete(room);
    }
  }

  _frame(frame) {
    switch (frame.type) {
      case "ping":
        this._write({ type: "pong" });
        break;
      case "welcome":
        this.welcome = frame;
        this.session = frame.session;
        this.user = this.user && !this.token ? this.user : frame.user;
        this._arm();
        this._emit("welcome", frame);
        // The URL's room comes first; the others are joined now, with since.
        for (const room of this.rooms.keys()) if (room !== this._first) this._sendJoin(room);
        break;
      case "joined":
        this._joined(frame);
        break;
      case "message":
        this._message(frame);
        break;
      case "ack": {
        const entry = this._pending.get(frame.id);
        if (entry) {
          this._pending.delete(frame.id);
          clearTimeout(entry.timer);
          entry.resolve(frame);
        }
        this._emit("ack", frame);
        break;
      }
      case "presence": {
        const known = this.rooms.get(frame.room);
        if (known) {
          if (frame.event === "join") known.members.add(frame.user);
          else known.members.delete(frame.user);
        }
        this._emit("presence", { ...frame, members: this.members(frame.room) });
        break;
      }
      case "left":
        this._emit("left", frame);
        break;
      case "error":
        this._error(frame);
        break;
      case "bye":
        this._bye = frame;
        this._emit("bye", frame);
        break;
      default:
        break; // pong and frames of a later protocol version
    }
  }

  _joined(frame) {
    const known = this._room(frame.room);
    const asked = known.seq !== null;
    const sameRun = asked && known.epoch === frame.epoch;
    if (!(frame.recovered && sameRun)) {
      // Not recovered (or a new run): nothing is replayed; carry on from joined.seq.
      known.seq = frame.seq;
      known.epoch = frame.epoch;
    }
    const wasJoined = known.joined;
    known.joined = true;
    known.members = new Set((frame.members || []).map((m) => m.user));
    if (this.state !== "live" && frame.room === this._first) {
      this.attempt = 0;
      this._setState("live", { resumed: this._resuming });
    }
    this._emit("joined", { ...frame, resumed: this._resuming, renewed: wasJoined });
    this._emit("members", { room: frame.room, members: this.members(frame.room) });
    const waiting = this._joining.get(frame.room);
    if (waiting) {
      this._joining.delete(frame.room);
      waiting[0](frame);
    }
    if (this._awaiting.delete(frame.room) && this._resuming && asked) {
      (frame.recovered ? this._recovery.recovered : this._recovery.lost).push(frame.room);
    }
    if (this._resuming && this._awaiting.size === 0 && !wasJoined) {
      this._emit("recovery", this._recovery);
    }
    for (const [id, entry] of this._pending) if (entry.room === frame.room) this._trySend(id);
  }

  _message(frame) {
    const known = this.rooms.get(frame.room);
    if (!known) return;
    // Recovery may replay what was already seen: each seq once, in order.
    if (known.seq !== null && frame.seq <= known.seq) return;
    known.seq = frame.seq;
    this._emit("message", frame);
  }

  _error(frame) {
    const entry = frame.id !== undefined ? this._pending.get(frame.id) : undefined;
    if (!entry) {
      const room = typeof frame.id === "string" && frame.id.startsWith("join:") ? frame.id.slice(5) : null;
      if (room !== null) {
        // A refused join (forbidden, room limit): forget the room.
        this.rooms.delete(room);
        this._awaiting.delete(room);
        const waiting = this._joining.get(room);
        this._joining.delete(room);
        if (waiting) waiting[1](Object.assign(new Error(frame.detail), { code: frame.code }));
      }
      this._emit("error", frame);
      return;
    }
    if (RETRIED_ERRORS.has(frame.code)) {
      const delay = backoffDelay(entry.attempts, { base: 250, max: 5000, floor: 50 });
      clearTimeout(entry.timer);
      entry.timer = setTimeout(() => this._trySend(frame.id), delay);
      this._emit("error", { ...frame, retrying: true, delay });
      return;
    }
    this._pending.delete(frame.id);
    entry.reject(Object.assign(new Error(frame.detail), { code: frame.code }));
    this._emit("error", frame);
  }
}
