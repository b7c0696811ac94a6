// chat.js: a browser client for the chat server's chat.v1 protocol (docs/protocol.md).
// An ES module with no build step and no dependency; served by the server at
// /static/chat.js. Usage and events: docs/pages.md.
//
//   import { ChatClient } from "/static/chat.js";
//   const chat = new ChatClient({ user: "alice", rooms: ["lobby"] });
//   chat.addEventListener("message", (e) => console.log(e.detail));
//   chat.connect();
//   await chat.send("lobby", "hi");        // resolves with the ack (see send() for when it rejects)
//
// The rules (the same as the Python client's, chat/client/):
// - heartbeats: every server "ping" is answered "pong"; a connection silent for
//   longer than heartbeat interval + timeout (+ slack) is presumed dead and dropped.
// - pacing: every other client frame (join, leave, send, refresh) takes a token of a
//   bucket kept below the server's welcome.limits (80 % of its rate, half its burst):
//   the server refuses frames over its rate and closes a session that keeps going
//   (1008, final), so a burst of sends or of rejoins is spread out, never refused.
// - reconnect: after a lost connection, with exponential backoff and full jitter,
//   never sooner than bye.retry_after_ms; never after close 1000, 1003, 1008, 1009,
//   4500-4999 or a bye with reconnect: false (README, Close codes and refusals). The
//   backoff starts over only after a connection that lasted (stableAfter). Browsers
//   hide a refused handshake's HTTP status (it is close 1006), so after connections
//   in a row that ended before the server's welcome the client stops: state "closed"
//   with refused: true. Soon (maxFirstFailures) before its first welcome, a bad token
//   being likelier than an outage; later (maxFailures) once it was live, so a server
//   restart is waited for; at once when the token's exp has passed.
// - recovery: every room is rejoined with since (its last seq) and epoch; missed
//   messages are delivered once, in seq order; a room whose gap could not be
//   recovered is reported ("recovery" event, lost). A join refused rate_limited or
//   unavailable is tried again after a backoff; a room is dropped (reported with a
//   "left" event carrying the code) only when refused for good (forbidden).
// - sends carry an id and wait in a bounded outbox (outboxLimit) until their ack; a
//   send is written again with the same id after "unavailable", "rate_limited" or a
//   lost connection (the server deduplicates by id), at most maxSendAttempts times.
//   A delivered message with a pending send's id (a replay after a reconnect) settles
//   that send as its ack would.
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

/** Errors after which a send (same id) or a join (with since) is tried again. */
const RETRIED_ERRORS = new Set(["unavailable", "rate_limited"]);

/** The server's limits when its welcome has none (docs/protocol.md, Connecting). */
const DEFAULT_LIMITS = { rate: 20, burst: 40 };

/** An Error with a protocol-like `code` (the server's error codes, or the client's own). */
function failure(code, message) {
  return Object.assign(new Error(message), { code });
}

/**
 * A token bucket in milliseconds: at most `rate` frames per second, `burst` at once.
 * take(now) spends a token if there is one; readyAt() is when the next one is there.
 */
export class Bucket {
  constructor(rate, burst, now) {
    this.rate = rate;
    this.burst = Math.max(1, burst);
    this.tokens = this.burst;
    this.at = now;
  }

  _fill(now) {
    this.tokens = Math.min(this.burst, this.tokens + (Math.max(0, now - this.at) / 1000) * this.rate);
    this.at = Math.max(this.at, now);
  }

  take(now) {
    this._fill(now);
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  readyAt() {
    return this.at + (Math.max(0, 1 - this.tokens) / this.rate) * 1000;
  }
}

/**
 * The client's own pace for the server's `welcome.limits`: below them (80 % of the
 * rate, half the burst), since pongs and other tabs of the same session count too.
 */
export function paceFor(limits) {
  const rate = Number((limits && limits.rate) || DEFAULT_LIMITS.rate);
  const burst = Number((limits && limits.burst) || DEFAULT_LIMITS.burst);
  return { rate: Math.max(rate * 0.8, 0.1), burst: Math.max(1, Math.floor(burst / 2)) };
}

/** Whether JWT `token`'s exp (if it has a readable one) is at or before `now` (ms). */
export function tokenExpired(token, now = Date.now()) {
  if (!token) return false;
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "=")));
    return typeof claims.exp === "number" && claims.exp * 1000 <= now;
  } catch {
    return false; // not a JWT we can read: the server decides
  }
}

/**
 * One logical chat connection that outlives its WebSockets.
 *
 * Events (CustomEvent, payload in `event.detail`):
 * - "state": {state, delay, attempt, code, reason, refused}: state is "connecting",
 *   "live", "reconnecting" (delay ms until the next attempt) or "closed" (for good;
 *   refused: true when it gave up on connections that ended before the welcome: a
 *   refused token, or a server that is down: sign in again).
 * - "welcome": the server's welcome frame (session, user, node, heartbeat, limits).
 * - "joined": {room, seq, epoch, recovered, members, resumed}: a room (re)joined.
 * - "message": a message frame (room, seq, id, user, text, ts), each seq once, in order.
 * - "presence": {room, event, user, members} after a member list changed.
 * - "members": {room, members}: the room's member list was replaced.
 * - "recovery": {recovered: [rooms], lost: [rooms]} once every room is back after a reconnect.
 * - "left": {room} after the server's left frame, or {room, code, detail} for a room
 *   the server refused for good (forbidden): dropped, its sends and join rejected.
 * - "error": an error frame (with retrying: true and delay when it is tried again).
 * - "ack": an ack frame. "bye": the bye frame.
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
   * @param {number} [options.stableAfter] ms a connection must last for the backoff to start over (10000).
   * @param {number} [options.maxFirstFailures] connections in a row ended before the first welcome before giving up (3).
   * @param {number} [options.maxFailures] the same once a welcome came (10: about a minute of backoff).
   * @param {number} [options.maxSendAttempts] writes per send before it is rejected (20).
   * @param {number} [options.outboxLimit] sends awaiting their ack at most (1000).
   * @param {Function} [options.WebSocket] a WebSocket constructor (tests).
   */
  constructor(options = {}) {
    super();
    const here = typeof location !== "undefined" ? location : null;
    this.url = options.url || (here ? `${here.protocol === "https:" ? "wss:" : "ws:"}//${here.host}` : "");
    this.user = options.user || null;
    this.token = options.token || null;
    this.backoff = { base: options.backoffBase ?? 500, max: options.backoffMax ?? 30000 };
    this.stableAfter = options.stableAfter ?? 10000;
    this.maxFirstFailures = options.maxFirstFailures ?? 3;
    this.maxFailures = options.maxFailures ?? 10;
    this.maxSendAttempts = options.maxSendAttempts ?? 20;
    this.outboxLimit = options.outboxLimit ?? 1000;
    this.WebSocket = options.WebSocket || globalThis.WebSocket;
    /** @type {Map<string, {seq: number|null, epoch: string|null, members: Set<string>, joined: boolean, asking: boolean}>} */
    this.rooms = new Map();
    for (const room of options.rooms || []) this._room(room);
    this.home = (options.rooms || [])[0] || null;
    this.state = "idle";
    this.session = null;
    this.welcome = null;
    /** Reconnect attempts since the last connection that lasted stableAfter. */
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
    /** When the current connection's welcome came (performance.now()), or null. */
    this._welcomedAt = null;
    /** Connections in a row that ended before their welcome. */
    this._failures = 0;
    /** Whether a welcome came since connect(). */
    this._welcomed = false;
    /** The pace of the current connection (from its welcome), or null before it. */
    this._bucket = null;
    /** Frames other than sends (join, leave, refresh) waiting for a token. */
    this._control = [];
    this._pumpTimer = null;
    /** Refused joins tried again, by room: {attempts, timer}. */
    this._joinRetries = new Map();
    /** The outbox: sends not acknowledged yet, by id:
     * {room, text, resolve, reject, writes, refusals, readyAt, inflight}. */
    this._pending = new Map();
    /** Joins not answered yet, by room: {promise, resolve, reject}. */
    this._joining = new Map();
  }

  /** Open the connection (and keep it open until close() or a final close). */
  connect() {
    if (!this._stopped) return;
    if (!this.home) throw new Error("ChatClient needs at least one room");
    this._stopped = false;
    this.attempt = 0;
    this._failures = 0;
    this._welcomed = false;
    this._open();
  }

  /** Close for good: no reconnect; pending sends and joins are rejected. */
  close() {
    this._stopped = true;
    clearTimeout(this._timer);
    const ws = this._ws;
    this._lost(1000, "client closed");
    if (ws) ws.close(1000, "client closed");
    this._failPending(failure("closed", "client closed"));
    this._setState("closed", { code: 1000, reason: "client closed" });
  }

  /**
   * Join `room`; resolves with its joined frame (remembered for reconnects). Asking
   * again before the answer returns the same promise. Rejects when the server refuses
   * the room for good (forbidden), on leave(room) or close().
   */
  join(room) {
    const known = this.rooms.get(room);
    if (known && known.joined) return Promise.resolve({ room, seq: known.seq, epoch: known.epoch });
    const waiting = this._joining.get(room);
    if (waiting) return waiting.promise;
    this._room(room);
    if (!this.home) this.home = room;
    const entry = {};
    entry.promise = new Promise((resolve, reject) => Object.assign(entry, { resolve, reject }));
    this._joining.set(room, entry);
    // A room known already is joined with the others on the next welcome (or now).
    if (!known && this._bucket) this._queueJoin(room);
    return entry.promise;
  }

  /** Leave `room` (forgotten for reconnects); its pending sends and join are rejected. */
  leave(room) {
    const known = this.rooms.get(room);
    if (!known) return;
    this._forget(room, failure("left", `left ${room} before this was done`));
    // The server knows of the room once its join was written: tell it.
    if (this._bucket && (known.joined || known.asking)) this._queue({ type: "leave", room });
  }

  /**
   * Send `text` to `room`; resolves with the ack ({id, room, seq}) once the server has
   * it. Paced by welcome.limits; written again with the same id after "unavailable",
   * "rate_limited" or a lost connection. Rejects (error.code) at once for a room never
   * joined or left ("not_joined") or a full outbox ("outbox_full"); later on a
   * refusal (forbidden, bad_request...), leave(room), close(), a final close, or after
   * maxSendAttempts writes without an ack ("gave_up": it may have been published).
   */
  send(room, text, id = this.newId()) {
    if (this.state === "closed") return Promise.reject(failure("closed", "the client is closed"));
    if (!this.rooms.has(room)) return Promise.reject(failure("not_joined", `not joined to ${room}: join it first`));
    if (this._pending.size >= this.outboxLimit) {
      return Promise.reject(failure("outbox_full",
        `${this._pending.size} sends await their ack (the outbox holds ${this.outboxLimit}): wait for some before sending more`));
    }
    if (this._pending.has(id)) return Promise.reject(failure("bad_request", `a send with id ${id} is already pending`));
    return new Promise((resolve, reject) => {
      this._pending.set(id, { room, text, resolve, reject, writes: 0, refusals: 0, readyAt: 0, inflight: false });
      this._pump();
    });
  }

  /** A fresh send id, unique for this user (a random prefix per client and a counter). */
  newId() {
    return `${this._prefix}-${++this._counter}`;
  }

  /** Replace the session's JWT (before it expires); also used by later reconnects. */
  refresh(token) {
    this.token = token;
    if (this._bucket) this._queue({ type: "refresh", token, id: `refresh-${++this._counter}` });
  }

  /** The members of `room` as a sorted array. */
  members(room) {
    const known = this.rooms.get(room);
    return known ? [...known.members].sort() : [];
  }

  // -- internals ----------------------------------------------------------------------

  _room(room) {
    if (!this.rooms.has(room)) {
      this.rooms.set(room, { seq: null, epoch: null, members: new Set(), joined: false, asking: false });
    }
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
    for (const room of this.rooms.values()) {
      room.joined = false;
      room.asking = false;
    }
    known.asking = true; // the URL's room is joined by the handshake
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
        if (line && ws === this._ws) this._frame(JSON.parse(line));
      }
      // Sends go out after the whole frame: a replay batched with its joined settles
      // the sends it carries (see _message) before they could be written again.
      this._pump();
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

  /** The connection ended (close `code`): forget its state, then reconnect or stop. */
  _lost(code, reason) {
    clearTimeout(this._watchdog);
    clearTimeout(this._pumpTimer);
    const welcomedAt = this._welcomedAt;
    this._ws = null;
    this._welcomedAt = null;
    this._bucket = null;
    this._control = [];
    for (const retry of this._joinRetries.values()) clearTimeout(retry.timer);
    this._joinRetries.clear();
    // Written but not acknowledged: may or may not be published; written again, same id.
    for (const entry of this._pending.values()) entry.inflight = false;
    if (this._stopped) return;
    const bye = this._bye;
    if (!shouldReconnect(code, bye)) {
      this._stop(code, (bye && (bye.detail || bye.reason)) || reason, { bye });
      return;
    }
    // The backoff starts over only after a connection that lasted: a server that
    // accepts and then drops every connection at once is not hammered.
    if (welcomedAt !== null && performance.now() - welcomedAt >= this.stableAfter) this.attempt = 0;
    if (welcomedAt === null) {
      this._failures += 1;
      // A browser reports a refused handshake (401, 403) as 1006, like a server that
      // is down: stop after a few, at once when the token is known to have expired.
      if (tokenExpired(this.token)) {
        this._stop(code, "the token has expired", { refused: true });
        return;
      }
      if (this._failures >= (this._welcomed ? this.maxFailures : this.maxFirstFailures)) {
        this._stop(code, `could not connect (${this._failures} attempts in a row ended before the server's welcome: ` +
          "a refused token or room, or the server is down)", { refused: true });
        return;
      }
    }
    const floor = bye && bye.retry_after_ms ? bye.retry_after_ms : 0;
    const delay = backoffDelay(this.attempt, { ...this.backoff, floor });
    this.attempt += 1;
    this._setState("reconnecting", { delay, code, reason: (bye && bye.reason) || reason, bye });
    this._timer = setTimeout(() => this._open(), delay);
  }

  /** Stop for good: pending sends and joins are rejected, state "closed". */
  _stop(code, reason, extra = {}) {
    this._stopped = true;
    this._failPending(failure("closed", `closed ${code}: ${reason}`));
    this._setState("closed", { code, reason, ...extra });
  }

  _write(frame) {
    if (!this._ws || this._ws.readyState !== 1) return false;
    this._ws.send(JSON.stringify(frame));
    return true;
  }

  /** Queue a paced frame (anything but pong and send) and write what the pace allows. */
  _queue(frame) {
    this._control.push(frame);
    this._pump();
  }

  _queueJoin(room) {
    if (this._control.some((frame) => frame.type === "join" && frame.room === room)) return;
    const known = this._room(room);
    const frame = { type: "join", room, id: `join:${room}` };
    if (known.seq !== null) {
      frame.since = known.seq;
      if (known.epoch) frame.epoch = known.epoch;
    }
    this._queue(frame);
  }

  /**
   * Write what the bucket allows: queued joins, leaves and refreshes first, then the
   * sends due (room joined, retry time passed), oldest first; wake up for the rest.
   */
  _pump() {
    clearTimeout(this._pumpTimer);
    this._pumpTimer = null;
    if (!this._bucket || !this._ws || this._ws.readyState !== 1) return;
    const now = performance.now();
    let wake = Infinity;
    while (this._control.length) {
      if (!this._bucket.take(now)) {
        wake = this._bucket.readyAt();
        break;
      }
      const frame = this._control.shift();
      if (frame.type === "join" && this.rooms.has(frame.room)) this.rooms.get(frame.room).asking = true;
      this._write(frame);
    }
    if (wake === Infinity) {
      for (const [id, entry] of this._pending) {
        const known = this.rooms.get(entry.room);
        if (entry.inflight || !known || !known.joined) continue;
        if (entry.readyAt > now) {
          wake = Math.min(wake, entry.readyAt);
          continue;
        }
        if (entry.writes >= this.maxSendAttempts) {
          this._pending.delete(id);
          entry.reject(failure("gave_up", `send ${id} to ${entry.room} not acknowledged after ${entry.writes} attempts: ` +
            "it may have been published (look for its id among the room's messages)"));
          continue;
        }
        if (!this._bucket.take(now)) {
          wake = Math.min(wake, this._bucket.readyAt());
          break;
        }
        entry.inflight = true;
        entry.writes += 1;
        this._write({ type: "send", room: entry.room, text: entry.text, id });
      }
    }
    if (wake !== Infinity) this._pumpTimer = setTimeout(() => this._pump(), Math.max(1, Math.ceil(wake - now)));
  }

  _failPending(error) {
    for (const [id, entry] of this._pending) {
      this._pending.delete(id);
      entry.reject(error);
    }
    for (const [room, waiting] of this._joining) {
      this._joining.delete(room);
      waiting.reject(error);
    }
  }

  /** Forget `room`: no rejoin; its join and its sends are rejected with `error`. */
  _forget(room, error) {
    this.rooms.delete(room);
    if (this.home === room) this.home = this.rooms.keys().next().value || room;
    this._control = this._control.filter((frame) => frame.room !== room);
    const retry = this._joinRetries.get(room);
    if (retry) clearTimeout(retry.timer);
    this._joinRetries.delete(room);
    const waiting = this._joining.get(room);
    this._joining.delete(room);
    if (waiting) waiting.reject(error);
    for (const [id, entry] of this._pending) {
      if (entry.room !== room) continue;
      this._pending.delete(id);
      entry.reject(error);
    }
    if (this._awaiting.delete(room)) this._recovered();
  }

  /** After a reconnect, report once every room is back. */
  _recovered() {
    if (this._resuming && this._awaiting.size === 0) this._emit("recovery", this._recovery);
  }

  _frame(frame) {
    switch (frame.type) {
      case "ping":
        this._write({ type: "pong" }); // free: the server gives its token back
        break;
      case "welcome": {
        this.welcome = frame;
        this.session = frame.session;
        this.user = this.user && !this.token ? this.user : frame.user;
        const now = performance.now();
        this._welcomedAt = now;
        this._failures = 0;
        this._welcomed = true;
        const pace = paceFor(frame.limits);
        this._bucket = new Bucket(pace.rate, pace.burst, now);
        this._arm();
        this._emit("welcome", frame);
        // The URL's room comes first; the others are joined now, with since, paced.
        for (const room of this.rooms.keys()) if (room !== this._first) this._queueJoin(room);
        break;
      }
      case "joined":
        this._joined(frame);
        break;
      case "message":
        this._message(frame);
        break;
      case "ack":
        this._settle(frame.id, frame);
        this._emit("ack", frame);
        break;
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

  /** Resolve the pending send `id` with `ack` ({id, room, seq}), if it is pending. */
  _settle(id, ack) {
    const entry = this._pending.get(id);
    if (!entry) return;
    this._pending.delete(id);
    entry.resolve(ack);
  }

  _joined(frame) {
    // A room left while its join was on the way: the leave follows it.
    if (!this.rooms.has(frame.room)) return;
    const known = this.rooms.get(frame.room);
    const asked = known.seq !== null;
    const sameRun = asked && known.epoch === frame.epoch;
    if (!(frame.recovered && sameRun)) {
      // Not recovered (or a new run): nothing is replayed; carry on from joined.seq.
      known.seq = frame.seq;
      known.epoch = frame.epoch;
    }
    const wasJoined = known.joined;
    known.joined = true;
    known.asking = false;
    this._joinRetries.delete(frame.room);
    known.members = new Set((frame.members || []).map((m) => m.user));
    if (this.state !== "live" && frame.room === this._first) {
      // No backoff reset here: only a connection that lasts resets it (see _lost).
      this._setState("live", { resumed: this._resuming });
    }
    this._emit("joined", { ...frame, resumed: this._resuming, renewed: wasJoined });
    this._emit("members", { room: frame.room, members: this.members(frame.room) });
    const waiting = this._joining.get(frame.room);
    if (waiting) {
      this._joining.delete(frame.room);
      waiting.resolve(frame);
    }
    if (this._awaiting.delete(frame.room)) {
      if (this._resuming && asked) (frame.recovered ? this._recovery.recovered : this._recovery.lost).push(frame.room);
      if (!wasJoined) this._recovered();
    }
  }

  _message(frame) {
    const known = this.rooms.get(frame.room);
    if (!known) return;
    // Our own send, delivered (a replay after a reconnect whose ack was lost): it is
    // published, so it settles the send instead of being written again.
    if (frame.id !== null && frame.id !== undefined && frame.user === this.user) {
      const entry = this._pending.get(frame.id);
      if (entry && entry.room === frame.room && entry.text === frame.text) {
        this._settle(frame.id, { type: "ack", id: frame.id, room: frame.room, seq: frame.seq });
      }
    }
    // Recovery may replay what was already seen: each seq once, in order.
    if (known.seq !== null && frame.seq <= known.seq) return;
    known.seq = frame.seq;
    this._emit("message", frame);
  }

  _error(frame) {
    const entry = frame.id !== undefined ? this._pending.get(frame.id) : undefined;
    if (entry) {
      this._sendRefused(frame, entry);
      return;
    }
    const room = typeof frame.id === "string" && frame.id.startsWith("join:") ? frame.id.slice(5) : null;
    const known = room !== null ? this.rooms.get(room) : undefined;
    if (!known) {
      this._emit("error", frame);
      return;
    }
    known.asking = false;
    if (RETRIED_ERRORS.has(frame.code)) {
      // Over the rate or the broker busy: not this room's fault. Ask again (with since
      // and epoch, as every join) after a growing, jittered delay.
      const retry = this._joinRetries.get(room) || { attempts: 0, timer: null };
      const delay = backoffDelay(retry.attempts, { base: 500, max: 10000, floor: 100 });
      retry.attempts += 1;
      clearTimeout(retry.timer);
      const ws = this._ws;
      retry.timer = setTimeout(() => {
        const now = this.rooms.get(room);
        if (ws === this._ws && now && !now.joined) this._queueJoin(room);
      }, delay);
      this._joinRetries.set(room, retry);
      this._emit("error", { ...frame, room, retrying: true, delay });
      return;
    }
    // Refused for good (forbidden: the room limit, or a room the token does not allow):
    // no retry changes it. Dropped and reported.
    this._forget(room, failure(frame.code, frame.detail));
    this._emit("error", { ...frame, room });
    this._emit("left", { room, code: frame.code, detail: frame.detail });
  }

  _sendRefused(frame, entry) {
    entry.inflight = false;
    if (RETRIED_ERRORS.has(frame.code)) {
      entry.refusals += 1;
      const delay = backoffDelay(entry.refusals - 1, { base: 250, max: 5000, floor: 50 });
      entry.readyAt = performance.now() + delay;
      this._emit("error", { ...frame, retrying: true, delay });
      this._pump();
      return;
    }
    this._pending.delete(frame.id);
    entry.reject(failure(frame.code, frame.detail));
    this._emit("error", frame);
  }
}
