// The dashboard: one organization's agents, sessions, events, metrics and logs, live.
// It uses nothing but the public API and streamspace-realtime.js, as any other page could.
import { RealtimeClient, Paths, State } from "./streamspace-realtime.js";
import { openViewer, closeViewer, wireViewer } from "./viewer.js";

const TOKEN_KEY = "streamspace-realtime.token";
const DEV_TOKEN_KEY = "streamspace-realtime.devToken";
const MAX_EVENTS = 200;
const MAX_LOG_LINES = 1000;
const COMMAND_POLL_MS = 500, COMMAND_FOLLOW_MS = 120_000;
const FINAL_COMMAND = new Set(["completed", "failed", "expired"]);
const AGENTS_EVERY_MS = 5000;
const HIGHLIGHT_MS = 4000;

const $ = (id) => document.getElementById(id);

// The page's state: who is signed in and what the server last said.
const page = {
  token: "",
  me: null,          // GET /api/v1/me
  sessions: new Map(),  // name -> session (sessions_update shape)
  events: null, metrics: null, logs: null, // RealtimeClients
  agentsTimer: null,
  commandSeq: 0,        // the command the command line follows
  novnc: "",            // where noVNC is served ("" when it is not), from the page config
};

// ---------------------------------------------------------------- token

async function fetchConfig() {
  try {
    const res = await fetch("/ui/config.json", { cache: "no-store" });
    return res.ok ? await res.json() : {};
  } catch {
    return {};
  }
}

/**
 * initialToken picks the token to start with: one in the address (#token=…, removed from the
 * address at once), else the stored one, else the development server's.
 */
async function initialToken(config) {
  const hash = new URLSearchParams(location.hash.slice(1));
  page.linkedView = hash.get("view") || "";
  if (hash.get("token")) {
    history.replaceState(null, "", location.pathname + location.search);
    return hash.get("token");
  }
  const stored = localStorage.getItem(TOKEN_KEY) || "";
  const lastDev = localStorage.getItem(DEV_TOKEN_KEY) || "";
  if (config.devToken) localStorage.setItem(DEV_TOKEN_KEY, config.devToken);
  // A stored development token from an earlier run of serve --dev gives way to the new one.
  if (config.devToken && (!stored || stored === lastDev)) return config.devToken;
  return stored;
}

/**
 * refreshDevToken is asked when the server refuses the token: a restarted development server
 * signs with a new secret, and its new token replaces the old one the page was using.
 */
async function refreshDevToken() {
  const lastDev = localStorage.getItem(DEV_TOKEN_KEY) || "";
  if (page.token && page.token !== lastDev) return false;
  const config = await fetchConfig();
  if (!config.devToken || config.devToken === page.token) return false;
  localStorage.setItem(DEV_TOKEN_KEY, config.devToken);
  await signIn(config.devToken);
  return true;
}

async function api(path, init = {}) {
  const res = await fetch(path, {
    ...init,
    headers: { Authorization: "Bearer " + page.token, "Content-Type": "application/json", ...(init.headers || {}) },
  });
  const body = await res.json().catch(() => ({}));
  return { status: res.status, ok: res.ok, body };
}

// ---------------------------------------------------------------- sign in

async function signIn(token) {
  token = (token || "").trim();
  if (token !== page.token) {
    clearOrgData();
    page.me = null;
    $("whoami").textContent = "not signed in";
  }
  page.token = token;
  $("token").value = token;
  if (token) localStorage.setItem(TOKEN_KEY, token); else localStorage.removeItem(TOKEN_KEY);
  if (!token) {
    showAuthError("Paste a token to connect.");
    stopAll();
    return;
  }
  if (await loadMe() === "replaced") return;
  connectAll();
}

/**
 * loadMe asks the server who the token says we are. It answers "ok", "refused", "replaced"
 * (a restarted development server's new token took over) or "unreachable".
 */
async function loadMe() {
  let r;
  try {
    r = await api("/api/v1/me");
  } catch {
    showAuthError("The server does not answer; connecting when it does.");
    return "unreachable";
  }
  if (r.ok) {
    page.me = r.body;
    showAuthError("");
    $("whoami").textContent = `${page.me.username || page.me.userId} · ${page.me.role} of ${page.me.orgId}`;
    $("org-name").textContent = page.me.orgId;
    return "ok";
  }
  if (r.status === 401 && await refreshDevToken()) return "replaced";
  showAuthError(`Token refused: ${r.body.message || r.body.error} (${r.body.error || r.status}).`);
  return "refused";
}

// clearOrgData forgets what the last token showed: another token may be another organization's.
function clearOrgData() {
  page.sessions.clear();
  $("sessions").tBodies[0].replaceChildren();
  $("agents").tBodies[0].replaceChildren();
  $("events").replaceChildren();
  $("sessions-count").textContent = "";
  for (const id of ["metric-running", "metric-hibernated", "metric-total", "metric-connections", "metric-agents"]) setText(id, "–");
  if (page.logs) page.logs.close();
  page.logs = null;
  $("log-lines").replaceChildren();
  page.commandSeq++; // another identity: stop following the last command
  $("command-result").textContent = "";
}

function showAuthError(text) {
  const el = $("auth-error");
  el.textContent = text;
  el.hidden = !text;
}

function staff() { return page.me && (page.me.role === "operator" || page.me.role === "admin"); }
function admin() { return page.me && page.me.role === "admin"; }

function stopAll() {
  closeViewer();
  for (const k of ["events", "metrics", "logs"]) {
    if (page[k]) page[k].close();
    page[k] = null;
  }
  clearInterval(page.agentsTimer);
  page.agentsTimer = null;
}

function connectAll() {
  // One client per socket for the page's life: a new token is handed to them, and they
  // reconnect with it (RealtimeClient.setToken).
  if (!page.events) {
    page.events = new RealtimeClient({ getToken: () => page.token, path: Paths.sessions });
    watchState(page.events, "conn-sessions");
    page.events.on("sessions_update", (m) => renderSessions(m.sessions || []));
    page.events.on("message", (m) => { if (m.type && m.type.startsWith("session.")) onSessionEvent(m); });
    page.events.on("message", (m) => { if (m.type && !m.type.startsWith("session.") && m.offset !== undefined) addEvent(m); });
    page.events.on("error", onClientError);
    // Signed in while the server was away: learn the role now, and open what it allows.
    page.events.on("connected", async () => {
      if (!page.me && await loadMe() === "ok") connectAll();
    });
    page.events.start();
  } else {
    page.events.setToken(page.token);
  }
  if (staff()) {
    if (!page.metrics) {
      page.metrics = new RealtimeClient({ getToken: () => page.token, path: Paths.cluster });
      watchState(page.metrics, "conn-metrics");
      page.metrics.on("metrics_update", renderMetrics);
      page.metrics.start();
    } else {
      page.metrics.setToken(page.token);
    }
    $("metrics-note").hidden = true;
    $("agents-note").hidden = true;
    loadAgents();
    clearInterval(page.agentsTimer);
    page.agentsTimer = setInterval(loadAgents, AGENTS_EVERY_MS);
  } else if (page.me) {
    if (page.metrics) page.metrics.close();
    page.metrics = null;
    clearInterval(page.agentsTimer);
    setText("conn-metrics", "—", "state idle");
    note("metrics-note", "Metrics are for operators and admins.");
    note("agents-note", "Agents are for operators and admins.");
    $("agents").tBodies[0].replaceChildren();
  }
  $("start-form").hidden = !admin();
}

async function onClientError(err) {
  if (err.kind === "auth") {
    if (await refreshDevToken()) return;
    showAuthError(`Token refused: ${err.message || err.code} (${err.code}).`);
  }
}

function watchState(client, id) {
  client.on("state", ({ state, delay }) => {
    const text = state === State.RECONNECTING && delay !== undefined ? `reconnecting in ${(delay / 1000).toFixed(1)} s` : state;
    setText(id, text, "state " + state);
  });
}

function setText(id, text, className) {
  const el = $(id);
  el.textContent = text;
  if (className !== undefined) el.className = className;
}

function note(id, text) {
  const el = $(id);
  el.textContent = text;
  el.hidden = false;
}

// ---------------------------------------------------------------- metrics and agents

function renderMetrics(m) {
  const x = m.metrics || {};
  const s = x.sessions || {}, a = x.agents || {};
  setText("metric-running", String(s.running ?? 0));
  setText("metric-hibernated", String(s.hibernated ?? 0));
  setText("metric-total", String(s.total ?? 0));
  setText("metric-connections", String(x.activeConnections ?? 0));
  setText("metric-agents", `${a.online ?? 0}/${a.total ?? 0}`);
}

let agentsLoading = false;
async function loadAgents() {
  if (!staff() || agentsLoading) return;
  agentsLoading = true;
  try {
    const r = await api("/api/v1/agents");
    if (r.ok) renderAgents(r.body.agents || []);
  } catch {
    // The server is away; the sockets' state says so, and the next tick tries again.
  } finally {
    agentsLoading = false;
  }
}

function renderAgents(agents) {
  const rows = agents.map((a) => {
    const tr = el("tr", { "data-agent": a.agentId });
    tr.append(
      el("td", {}, a.agentId), el("td", {}, a.platform), el("td", {}, a.region || ""),
      el("td", { class: "status " + a.status }, a.status),
      el("td", { class: "heartbeat", title: a.lastHeartbeat || "" }, a.lastHeartbeat ? ago(a.lastHeartbeat) : "never"),
      el("td", {}, a.replica || ""),
    );
    return tr;
  });
  $("agents").tBodies[0].replaceChildren(...rows);
  const select = $("start-agent");
  const chosen = select.value;
  select.replaceChildren(...agents.filter((a) => a.status !== "offline" && a.approvalStatus === "approved")
    .map((a) => el("option", { value: a.agentId }, a.agentId)));
  if (chosen) select.value = chosen;
}

// ---------------------------------------------------------------- sessions and events

function renderSessions(list) {
  const seen = new Set();
  for (const s of list) {
    seen.add(s.name);
    const before = page.sessions.get(s.name);
    page.sessions.set(s.name, s);
    upsertRow(s, before && before.state !== s.state);
  }
  for (const name of [...page.sessions.keys()]) {
    if (!seen.has(name)) {
      page.sessions.delete(name);
      const tr = sessionRow(name);
      if (tr) tr.remove();
    }
  }
  $("sessions-count").textContent = `(${page.sessions.size})`;
}

function sessionRow(name) {
  return $("sessions").tBodies[0].querySelector(`tr[data-session="${CSS.escape(name)}"]`);
}

function upsertRow(s, changed) {
  let tr = sessionRow(s.name);
  if (!tr) {
    tr = el("tr", { "data-session": s.name });
    $("sessions").tBodies[0].append(tr);
    changed = true;
  }
  const pod = (s.status && s.status.podName) || "";
  tr.replaceChildren(
    el("td", { class: "name" }, s.name), el("td", {}, s.user || ""), el("td", {}, s.template || ""),
    el("td", { class: "state " + (s.state || "") }, s.state || ""),
    el("td", { class: "pod" }, pod), el("td", {}, s.agent_id || ""),
    el("td", {}, String(s.activeConnections ?? 0)),
    actions(s, pod),
  );
  if (changed) highlight(tr);
}

function actions(s, pod) {
  const td = el("td", { class: "actions" });
  if (s.state === "running") td.append(button("view", () => viewSession(s), "action-view"));
  if (staff() && pod) td.append(button("logs", () => openLogs(pod, s.namespace), "action-logs"));
  if (admin() && s.agent_id) {
    const moves = { running: ["stop_session", "hibernate_session"], pending: ["stop_session"], hibernated: ["wake_session", "stop_session"] };
    for (const action of moves[s.state] || []) {
      td.append(button(action.replace("_session", ""), () => command(s.agent_id, action, s.name), "action-" + action));
    }
  }
  return td;
}

// viewSession opens the desktop viewer of session s. The server says whether the caller
// controls the desktop or only watches it (GET /api/v1/vnc/{id}/access, decided as the viewer
// socket decides), and noVNC is set up to match; the server drops a view-only viewer's input
// either way.
async function viewSession(s) {
  let r;
  try {
    r = await api(`/api/v1/vnc/${encodeURIComponent(s.name)}/access`);
  } catch {
    r = { ok: false, body: { message: "the server does not answer" } };
  }
  if (!r.ok) {
    openViewer({ session: s.name, refusal: `Cannot view ${s.name}: ${r.body.message || r.body.error || r.status}.` });
    return;
  }
  openViewer({ session: s.name, base: page.novnc, token: page.token, viewOnly: r.body.viewOnly });
}

function highlight(tr) {
  tr.classList.remove("changed");
  void tr.offsetWidth; // restart the animation
  tr.classList.add("changed");
  setTimeout(() => tr.classList.remove("changed"), HIGHLIGHT_MS);
}

function onSessionEvent(e) {
  addEvent(e);
  const s = page.sessions.get(e.sessionId);
  const data = e.data || {};
  if (e.type === "session.state.changed" && data.newState) {
    // Shown at once; the next sessions_update confirms it.
    const next = { ...(s || { name: e.sessionId, user: e.userId }), state: data.newState };
    if (s && s.status) next.status = { ...s.status, phase: cap(data.newState) };
    page.sessions.set(e.sessionId, next);
    upsertRow(next, !s || s.state !== data.newState);
  } else if (e.type === "session.created" && !s) {
    const next = { name: e.sessionId, user: e.userId, template: data.template || "", state: data.state || "pending", agent_id: data.agentId || "" };
    page.sessions.set(e.sessionId, next);
    upsertRow(next, true);
  } else if (e.type === "session.deleted" && s) {
    page.sessions.delete(e.sessionId);
    const tr = sessionRow(e.sessionId);
    if (tr) tr.remove();
  }
  $("sessions-count").textContent = `(${page.sessions.size})`;
}

function addEvent(e) {
  const li = el("li", { "data-type": e.type || "" });
  const when = e.timestamp ? new Date(e.timestamp) : new Date();
  li.append(
    el("time", { datetime: when.toISOString() }, when.toLocaleTimeString()),
    el("b", {}, e.type || "message"),
    el("span", {}, summary(e)),
  );
  const list = $("events");
  list.prepend(li);
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
}

function summary(e) {
  const d = e.data || {};
  if (e.type === "session.state.changed") return `${e.sessionId}: ${d.oldState || "?"} → ${d.newState}`;
  if (e.type && e.type.startsWith("session.")) return `${e.sessionId || ""} ${e.userId ? "(" + e.userId + ")" : ""}`;
  if (e.type === "connected") return e.recovered ? "resumed: missed events replayed" : "fresh stream";
  const copy = { ...e };
  delete copy.type; delete copy.offset; delete copy.epoch;
  return JSON.stringify(copy).slice(0, 160);
}

// ---------------------------------------------------------------- commands

async function command(agentId, action, sessionId, payload = {}) {
  const out = $("command-result");
  const seq = ++page.commandSeq; // a newer command takes the line over
  const show = (text, error) => {
    if (seq !== page.commandSeq) return false;
    out.textContent = text;
    out.className = error ? "note error" : "note";
    return true;
  };
  const what = `${action} ${sessionId || ""}`.trim();
  show(`${what}…`);
  try {
    const r = await api(`/api/v1/admin/agents/${encodeURIComponent(agentId)}/command`, {
      method: "POST",
      body: JSON.stringify({ action, sessionId, payload }),
    });
    if (!r.ok) {
      show(`${action} refused: ${r.body.message || r.body.error} (${r.status})`, true);
      return;
    }
    await followCommand(r.body.commandId, r.body.status, (c) =>
      show(`${what}: command ${c.commandId} ${c.status}${c.error ? ": " + c.error : ""}`, c.status === "failed" || c.status === "expired"));
  } catch (err) {
    show(`${action} failed: ${err}`, true);
  }
}

// followCommand reports a command's status until it is final, reading it back every
// COMMAND_POLL_MS for at most COMMAND_FOLLOW_MS; report returns false once a newer command
// took the line over.
async function followCommand(commandId, status, report) {
  let c = { commandId, status };
  const until = Date.now() + COMMAND_FOLLOW_MS;
  while (report(c) && !FINAL_COMMAND.has(c.status) && Date.now() < until && page.token) {
    await new Promise((resolve) => setTimeout(resolve, COMMAND_POLL_MS));
    const r = await api(`/api/v1/admin/commands/${encodeURIComponent(commandId)}`).catch(() => null);
    if (r === null || r.status >= 500) continue; // the network or the server: ask again
    if (!r.ok) return; // no longer ours to read: the line keeps the last status
    c = r.body;
  }
}

function startSession(ev) {
  ev.preventDefault();
  const agentId = $("start-agent").value;
  if (!agentId) {
    $("command-result").textContent = "No agent is online to start a session on.";
    return;
  }
  const sessionId = $("start-session").value.trim() || "web-" + Math.random().toString(36).slice(2, 8);
  command(agentId, "start_session", sessionId, { user: page.me.userId, template: $("start-template").value.trim() });
  $("start-session").value = "";
}

// ---------------------------------------------------------------- logs

function openLogs(pod, namespace) {
  if (page.logs) page.logs.close();
  const lines = $("log-lines");
  lines.replaceChildren();
  $("logs-pod").textContent = pod;
  page.logs = new RealtimeClient({
    getToken: () => page.token,
    path: Paths.logs(pod, namespace),
    reconnectOnNormalClose: false,
  });
  watchState(page.logs, "conn-logs");
  page.logs.on("log", (m) => appendLog(m.line, "", m.timestamp));
  page.logs.on("log_error", (m) => appendLog(`error: ${m.message}`, "error"));
  page.logs.on("close", ({ code, reason }) => { if (code === 1000) appendLog(`— ${reason || "stream ended"} —`, "end"); });
  // A reconnect starts the tail again: clear what the last connection showed.
  page.logs.on("state", ({ state }) => { if (state === State.CONNECTING) lines.replaceChildren(); });
  page.logs.start();
}

function appendLog(text, className, timestamp) {
  const lines = $("log-lines");
  const stick = lines.scrollTop + lines.clientHeight >= lines.scrollHeight - 4;
  const line = el("div", className ? { class: className } : {});
  if (timestamp) line.append(el("time", { datetime: timestamp }, new Date(timestamp).toLocaleTimeString()));
  line.append(document.createTextNode(text));
  lines.append(line);
  while (lines.children.length > MAX_LOG_LINES) lines.firstChild.remove();
  if (stick) lines.scrollTop = lines.scrollHeight;
}

// ---------------------------------------------------------------- helpers

function el(tag, attrs = {}, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function button(label, onClick, id) {
  const b = el("button", { type: "button", class: "small" + (id ? " " + id : "") }, label);
  b.addEventListener("click", onClick);
  return b;
}

function cap(s) { return s ? s[0].toUpperCase() + s.slice(1) : s; }

function ago(iso) {
  const s = Math.max(0, Math.round((Date.now() - new Date(iso).getTime()) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  return new Date(iso).toLocaleString();
}

// ---------------------------------------------------------------- start

async function main() {
  $("token-form").addEventListener("submit", (ev) => { ev.preventDefault(); signIn($("token").value); });
  $("signout").addEventListener("click", () => {
    localStorage.removeItem(TOKEN_KEY);
    page.me = null;
    $("whoami").textContent = "not signed in";
    signIn("");
  });
  $("start-form").addEventListener("submit", startSession);
  wireViewer();
  // Another tab signed in with another token: follow it.
  addEventListener("storage", (ev) => { if (ev.key === TOKEN_KEY && ev.newValue && ev.newValue !== page.token) signIn(ev.newValue); });
  const config = await fetchConfig();
  page.novnc = config.novnc || "";
  await signIn(await initialToken(config));
  // A link to a desktop (#view=<sessionId>, as a share is passed on) opens it once signed in:
  // a session shared with the caller is not in the caller's own list.
  if (page.linkedView && page.me) viewSession({ name: page.linkedView });
  document.body.dataset.ready = "true";
}

main();
