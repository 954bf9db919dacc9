// streamspace-realtime.js: the browser client of StreamSpace Realtime's WebSockets
// (docs: PROTOCOL.md 2, and the "JavaScript client" section of the README).
//
// One RealtimeClient holds one socket (sessions, cluster metrics or one pod's logs). It
// reconnects for as long as it is open: with jittered exponential backoff that starts under a
// second and never gives up, at once when the tab becomes visible or the network comes back,
// and at once when its token changes. On the sessions socket it resumes with `since`, so that
// no event is missed across a reconnect when the server still has them. Every frame is
// dispatched to the listeners of its `type`, and to "message" listeners.
//
// No dependencies, no build step: import it as an ES module.

/** The fourteen session event types of PROTOCOL.md 2.3. */
export const SESSION_EVENT_TYPES = Object.freeze([
  "session.created", "session.updated", "session.deleted", "session.state.changed",
  "session.connected", "session.disconnected", "session.heartbeat", "session.idle",
  "session.active", "session.resources.updated", "session.tags.updated", "session.shared",
  "session.unshared", "session.error",
]);

/** Every other message type a browser receives (PROTOCOL.md 2.3 and 2.5). */
export const MESSAGE_TYPES = Object.freeze([
  "connected", "sessions_update", "metrics_update", "log", "log_error",
]);

/** Close codes of PROTOCOL.md 1.4 (docs/PROTOCOL.md). */
export const CloseCode = Object.freeze({
  NORMAL: 1000, GOING_AWAY: 1001, POLICY: 1008, TOO_BIG: 1009, INTERNAL: 1011,
  OVERLOADED: 1013, SLOW_CONSUMER: 4001, TOKEN_EXPIRED: 4003, ACCESS_REVOKED: 4004,
});

/** Paths of the browser endpoints (PROTOCOL.md 2.2). */
export const Paths = Object.freeze({
  sessions: "/api/v1/ws/sessions",
  cluster: "/api/v1/ws/cluster",
  logs: (pod, namespace) =>
    "/api/v1/ws/logs/" + (namespace ? encodeURIComponent(namespace) + "/" : "") + encodeURIComponent(pod),
});

/** Connection states, in the order a connection normally goes through them. */
export const State = Object.freeze({
  IDLE: "idle",                 // not started
  CONNECTING: "connecting",     // a socket is opening
  OPEN: "open",                 // frames flow
  RECONNECTING: "reconnecting", // waiting out the backoff before the next attempt
  CLOSED: "closed",             // close() was called, or a stream ended for good
});

/**
 * backoffDelay is the wait before reconnect attempt `attempt` (0 for the first): exponential
 * from `initial`, capped at `max`, with "equal jitter" (between half and all of it), so that
 * browsers dropped together do not come back together, and the first retry is under a second.
 */
export function backoffDelay(attempt, { initial = 500, max = 30000, random = Math.random } = {}) {
  const ceiling = Math.min(max, initial * 2 ** Math.min(attempt, 30));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

/**
 * parseFrames turns one text frame into the messages it carries. The server sends one JSON
 * object per frame; older servers (StreamSpace's) joined queued messages with "\n", so a frame
 * that is not one object is read line by line. Lines that are not JSON objects are returned in
 * `bad`, never thrown.
 */
export function parseFrames(text) {
  const one = tryObject(text);
  if (one) return { messages: [one], bad: [] };
  const messages = [], bad = [];
  for (const line of String(text).split("\n")) {
    if (line.trim() === "") continue;
    const m = tryObject(line);
    if (m) messages.push(m); else bad.push(line);
  }
  return { messages, bad };
}

function tryObject(text) {
  try {
    const v = JSON.parse(text);
    return v !== null && typeof v === "object" && !Array.isArray(v) ? v : null;
  } catch {
    return null;
  }
}

/**
 * RealtimeClient keeps one WebSocket to a StreamSpace Realtime server open.
 *
 *   const c = new RealtimeClient({ token, path: Paths.sessions });
 *   c.on("session.state.changed", (e) => ...);
 *   c.on("state", ({ state }) => ...);
 *   c.start();
 *
 * Options:
 *   url          the server's http(s) base URL (default: the page's origin)
 *   path         endpoint path (default Paths.sessions)
 *   token        the JWT, or getToken: a function returning it (or a promise of it), asked
 *                before every attempt
 *   sessionId    subscribe to one session (sessions socket)
 *   resume       resume with `since` after a reconnect (default: true on the sessions socket)
 *   reconnectOnNormalClose  reconnect when the server closes with 1000 (default true; a logs
 *                socket sets false: 1000 there means the stream ended)
 *   backoff      { initial, max } in milliseconds (default 500 and 30000)
 *   WebSocket, fetch, document, window: what to use instead of the globals (tests, workers)
 *
 * Events: every message `type` (see SESSION_EVENT_TYPES and MESSAGE_TYPES; broadcasts carry
 * their own), "message" (every message), "state" ({state, attempt, delay?}), "error"
 * ({kind: "parse"|"auth"|"closed"|"revoked", ...}) and "close" ({code, reason}). After 4004
 * (the subscribed session was unshared or deleted) the client stops: a new attempt would be
 * refused.
 */
export class RealtimeClient {
  constructor(options = {}) {
    this.options = options;
    const g = globalThis;
    this._WebSocket = options.WebSocket || g.WebSocket;
    this._fetch = options.fetch || (g.fetch && g.fetch.bind(g));
    this._document = options.document !== undefined ? options.document : g.document;
    this._window = options.window !== undefined ? options.window : g.window;
    this._listeners = new Map();
    this._state = State.IDLE;
    this._token = options.token || "";
    this._attempt = 0;
    this._socket = null;
    this._timer = null;
    this._epoch = "";
    this._offset = -1;
    this._everOpened = false;
    this.lastClose = null;
    this.lastError = null;
    this._onVisible = () => {
      if (this._document && this._document.visibilityState === "visible") this.reconnectNow("visible");
    };
    this._onOnline = () => this.reconnectNow("online");
  }

  /** The connection state (see State). */
  get state() { return this._state; }

  /** The position of the last stream entry received, "epoch:offset", or "" before any. */
  get position() { return this._epoch && this._offset >= 0 ? this._epoch + ":" + this._offset : ""; }

  /** on adds a listener and returns the function that removes it. */
  on(type, fn) {
    if (!this._listeners.has(type)) this._listeners.set(type, new Set());
    this._listeners.get(type).add(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) {
    const set = this._listeners.get(type);
    if (set) set.delete(fn);
  }

  /** start opens the connection and keeps it open until close(). */
  start() {
    if (this._state !== State.IDLE && this._state !== State.CLOSED) return this;
    if (this._document) this._document.addEventListener("visibilitychange", this._onVisible);
    if (this._window) this._window.addEventListener("online", this._onOnline);
    this._attempt = 0;
    this._connect();
    return this;
  }

  /** close closes the connection for good (until start() again). */
  close() {
    if (this._document) this._document.removeEventListener("visibilitychange", this._onVisible);
    if (this._window) this._window.removeEventListener("online", this._onOnline);
    clearTimeout(this._timer);
    this._timer = null;
    this._drop(CloseCode.NORMAL, "client closed");
    this._setState(State.CLOSED);
  }

  /**
   * setToken replaces the token. A different token means a different identity, so an open
   * connection is replaced at once, and a waiting one tries at once.
   */
  setToken(token) {
    if (token === this._token) return;
    this._token = token;
    if (this._state === State.IDLE || this._state === State.CLOSED) return;
    this._attempt = 0;
    this.reconnectNow("token changed");
  }

  /**
   * reconnectNow skips the rest of the backoff; with an open socket it does nothing, unless
   * the reason is a new token.
   */
  reconnectNow(reason) {
    if (this._state === State.IDLE || this._state === State.CLOSED) return;
    if (this._state === State.OPEN && reason !== "token changed") return;
    if (this._state === State.CONNECTING && reason !== "token changed") return;
    clearTimeout(this._timer);
    this._timer = null;
    this._drop(CloseCode.NORMAL, reason);
    this._connect();
  }

  _emit(type, detail) {
    const set = this._listeners.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(detail, type);
      } catch (err) {
        // A listener's bug must not stop the others, nor the connection: report it apart.
        setTimeout(() => { throw err; });
      }
    }
  }

  _setState(state, extra = {}) {
    if (this._state === state && state !== State.RECONNECTING) return;
    this._state = state;
    this._emit("state", { state, attempt: this._attempt, ...extra });
  }

  async _url() {
    const token = this.options.getToken ? await this.options.getToken() : this._token;
    if (this.options.getToken) this._token = token || "";
    const base = new URL(this.options.url || (globalThis.location && globalThis.location.origin) || "http://localhost");
    const u = new URL(this.options.path || Paths.sessions, base);
    u.protocol = base.protocol === "https:" ? "wss:" : "ws:";
    if (this._token) u.searchParams.set("token", this._token);
    if (this.options.sessionId) u.searchParams.set("session_id", this.options.sessionId);
    if (this._resumes() && this.position) u.searchParams.set("since", this.position);
    return u.toString();
  }

  _resumes() {
    const path = this.options.path || Paths.sessions;
    return this.options.resume !== undefined ? this.options.resume : path.endsWith("/ws/sessions");
  }

  async _connect() {
    this._setState(State.CONNECTING);
    const generation = (this._generation = (this._generation || 0) + 1);
    let url;
    try {
      url = await this._url();
    } catch (err) {
      this.lastError = { kind: "token", message: String(err) };
      this._emit("error", this.lastError);
      this._scheduleReconnect();
      return;
    }
    if (generation !== this._generation || this._state !== State.CONNECTING) return;
    let socket;
    try {
      socket = new this._WebSocket(url);
    } catch (err) {
      this.lastError = { kind: "closed", message: String(err) };
      this._emit("error", this.lastError);
      this._scheduleReconnect();
      return;
    }
    this._socket = socket;
    let opened = false;
    socket.onopen = () => {
      if (this._socket !== socket) return;
      opened = true;
      this._everOpened = true;
      this.lastError = null;
      this._setState(State.OPEN);
    };
    socket.onmessage = (ev) => {
      if (this._socket !== socket) return;
      if (typeof ev.data !== "string") return;
      this._receive(ev.data);
    };
    socket.onclose = (ev) => {
      if (this._socket !== socket) return;
      this._socket = null;
      this.lastClose = { code: ev.code, reason: ev.reason, opened };
      this._emit("close", this.lastClose);
      this._afterClose(ev.code, ev.reason, opened);
    };
    socket.onerror = () => {}; // onclose follows with what there is to know
  }

  _receive(text) {
    const { messages, bad } = parseFrames(text);
    for (const line of bad) {
      this._emit("error", { kind: "parse", data: line.slice(0, 200) });
    }
    for (const m of messages) {
      if (m.type === "connected") {
        // A fresh stream (not recovered) starts at the connection's head.
        this._epoch = m.epoch || "";
        this._offset = typeof m.offset === "number" ? m.offset : -1;
      } else if (typeof m.offset === "number" && typeof m.epoch === "string") {
        this._epoch = m.epoch;
        this._offset = m.offset;
      }
      this._attempt = 0;
      const type = typeof m.type === "string" ? m.type : "message";
      if (type !== "message") this._emit(type, m);
      this._emit("message", m);
    }
  }

  _afterClose(code, reason, opened) {
    if (this._state === State.CLOSED) return;
    if (code === CloseCode.NORMAL && opened && this.options.reconnectOnNormalClose === false) {
      this.close();
      return;
    }
    if (code === CloseCode.ACCESS_REVOKED) {
      this.lastError = { kind: "revoked", closeCode: code, reason, message: reason || "access revoked" };
      this._emit("error", this.lastError);
      this.close();
      return;
    }
    if (!opened || code === CloseCode.POLICY || code === CloseCode.TOKEN_EXPIRED) {
      // The browser does not show why an upgrade was refused: ask the server about the token,
      // so that a page can say "token expired" rather than "connection lost".
      this._explainRefusal(code, reason);
    }
    if (code === CloseCode.SLOW_CONSUMER) this._attempt = 0; // resume at once, with since
    this._scheduleReconnect({ code, reason });
  }

  async _explainRefusal(code, reason) {
    if (!this._fetch) return;
    const base = new URL(this.options.url || globalThis.location.origin);
    try {
      const res = await this._fetch(new URL("/api/v1/me", base), {
        headers: this._token ? { Authorization: "Bearer " + this._token } : {},
      });
      if (res.status === 401 || res.status === 403) {
        const body = await res.json().catch(() => ({}));
        this.lastError = { kind: "auth", status: res.status, code: body.error || "", message: body.message || "", closeCode: code, reason };
        this._emit("error", this.lastError);
        return;
      }
    } catch {
      // The server is unreachable: a plain closed error below says so.
    }
    this.lastError = { kind: "closed", closeCode: code, reason, message: reason || "connection lost" };
    this._emit("error", this.lastError);
  }

  _scheduleReconnect(extra = {}) {
    if (this._state === State.CLOSED) return;
    const delay = backoffDelay(this._attempt, this.options.backoff);
    this._attempt++;
    this._setState(State.RECONNECTING, { delay, ...extra });
    clearTimeout(this._timer);
    this._timer = setTimeout(() => {
      this._timer = null;
      this._connect();
    }, delay);
  }

  _drop(code, reason) {
    const s = this._socket;
    this._socket = null;
    this._generation = (this._generation || 0) + 1;
    if (!s) return;
    s.onopen = s.onmessage = s.onclose = s.onerror = null;
    try {
      s.close(code, String(reason).slice(0, 100));
    } catch {
      // Already closing.
    }
  }
}
