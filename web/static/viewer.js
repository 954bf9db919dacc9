// The desktop viewer: noVNC's RFB client, loaded from where the server serves noVNC, connected
// to the viewer socket (GET /api/v1/vnc/{sessionId}, PROTOCOL.md 6.1). No RFB code lives here.

const $ = (id) => document.getElementById(id);

const viewer = {
  rfb: null,     // the open noVNC RFB, or null
  RFB: null,     // noVNC's RFB class, once imported
  seq: 0,        // the viewer the panel shows; an older one's events are ignored
};

const NO_NOVNC = "noVNC is not served here: install Debian's novnc package (scripts/tools.sh), " +
  "start the server with --novnc-dir (STREAMSPACE_NOVNC_DIR), or run serve --dev to download it.";

function setState(text, state) {
  const b = $("conn-viewer");
  b.textContent = text;
  b.className = "state " + state;
}

function setNote(text, isError) {
  const p = $("viewer-note");
  p.textContent = text;
  p.className = isError ? "note error" : "note";
  p.hidden = !text;
}

/**
 * openViewer shows session's desktop in the viewer panel. base is where noVNC is served ("" when
 * it is not), token the caller's, viewOnly whether the page should send no input (the server
 * drops a view-only viewer's input whatever the page does); refusal, when set, is shown instead.
 */
export async function openViewer({ session, base, token, viewOnly, refusal }) {
  closeViewer();
  const seq = ++viewer.seq;
  $("viewer-card").hidden = false;
  $("viewer-card").scrollIntoView({ block: "start" }); // the panel sits below the other cards
  $("viewer-session").textContent = session + (viewOnly ? " (view only)" : "");
  $("viewer-screen").replaceChildren();
  setNote("");
  if (refusal) {
    setState("refused", "closed");
    setNote(refusal, true);
    return;
  }
  if (!base) {
    setState("unavailable", "closed");
    setNote(NO_NOVNC, true);
    return;
  }
  setState("connecting", "connecting");
  if (!viewer.RFB) {
    try {
      viewer.RFB = (await import(base + "core/rfb.js")).default;
    } catch (err) {
      setState("unavailable", "closed");
      setNote(`noVNC could not be loaded from ${base}: ${err}`, true);
      return;
    }
  }
  if (seq !== viewer.seq) return; // closed or replaced meanwhile
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const url = `${scheme}//${location.host}/api/v1/vnc/${encodeURIComponent(session)}?token=${encodeURIComponent(token)}`;
  const screen = $("viewer-screen");
  const rfb = new viewer.RFB(screen, url, { wsProtocols: ["binary"], shared: true });
  rfb.viewOnly = !!viewOnly;
  rfb.scaleViewport = true;
  rfb.addEventListener("connect", () => { if (seq === viewer.seq) setState("open", "open"); });
  rfb.addEventListener("disconnect", (e) => {
    if (seq !== viewer.seq) return;
    setState("closed", "closed");
    setNote(e.detail && e.detail.clean ? "The desktop connection ended." : "The desktop connection was lost or refused.", !(e.detail && e.detail.clean));
    viewer.rfb = null;
  });
  rfb.addEventListener("securityfailure", (e) => {
    if (seq === viewer.seq) setNote(`Security negotiation failed: ${(e.detail && e.detail.reason) || "unknown reason"}`, true);
  });
  viewer.rfb = rfb;
  screen.rfb = rfb; // for tests and the console
}

/** closeViewer disconnects the viewer, if any, and hides the panel. */
export function closeViewer() {
  viewer.seq++;
  if (viewer.rfb) {
    try { viewer.rfb.disconnect(); } catch { /* already closed */ }
  }
  viewer.rfb = null;
  const screen = $("viewer-screen");
  if (screen) { screen.rfb = null; screen.replaceChildren(); }
  if ($("viewer-card")) $("viewer-card").hidden = true;
  setState("idle", "idle");
}

/** wireViewer hooks the panel's close button. */
export function wireViewer() {
  $("viewer-close").addEventListener("click", closeViewer);
}
