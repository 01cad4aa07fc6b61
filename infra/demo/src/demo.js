// pipecat-gateway demo: the real @pipecat-ai/client-js talking to the gateway's /start (never to
// Pipecat Cloud directly), then connecting the chosen transport, as a real app does. A queued (202) start goes
// through the polling helper, and giving up cancels it.
import { PipecatClient } from "@pipecat-ai/client-js";
import { DailyTransport } from "@pipecat-ai/daily-transport";
import { DailyMediaManager, SmallWebRTCTransport, WavMediaManager } from "@pipecat-ai/small-webrtc-transport";
import { WebSocketTransport } from "@pipecat-ai/websocket-transport";

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
$("api").value = params.get("api") || "http://127.0.0.1:8000";
$("user").value = params.get("user") || "demo-user";
if (params.get("transport")) $("transport").value = params.get("transport");
if (params.get("mic") === "0") $("mic").checked = false;

function authHeaders() {
  const headers = new Headers({ "Content-Type": "application/json" });
  const token = $("token").value.trim();
  if (token) headers.set("Authorization", `Bearer ${token}`);
  else headers.set("X-Dev-User", $("user").value.trim()); // local stage only
  return headers;
}

function setBox(id, text, state) {
  $(id).textContent = text;
  $(id).dataset.state = state;
}
const setStatus = (text, state) => setBox("status", text, state);

// Times as the person reading them lives them: local, not raw UTC.
const localTime = (iso) => (iso ? new Date(iso).toLocaleString() : "");

// One request at a time per button: a double click must not start two sessions.
function busy(button, run) {
  return async () => {
    if (button.disabled) return;
    button.disabled = true;
    try { await run(); } finally { button.disabled = false; }
  };
}

// The polling helper: startBot() hands back any 2xx body; a 202 means "queued", so poll statusUrl
// (honouring retryAfter) until the gateway answers 200 with the transport's start body. Giving up (the
// signal aborts, an error, the tab closes) cancels the queued start: no bot is started for nobody.
export async function startWithQueue(client, startParams, { onQueued = () => {}, signal } = {}) {
  let result = await client.startBot(startParams);
  if (!result || result.status !== "queued") return result;
  const statusUrl = new URL(result.statusUrl, startParams.endpoint);
  const cancel = () => fetch(statusUrl, { method: "DELETE", headers: startParams.headers, keepalive: true });
  addEventListener("pagehide", cancel);
  try {
    while (result.status === "queued") {
      onQueued(result);
      await new Promise((resolve, reject) => {
        const timer = setTimeout(resolve, Math.max(1, result.retryAfter) * 1000);
        signal?.addEventListener("abort", () => { clearTimeout(timer); reject(new Error("cancelled")); },
                                { once: true });
      });
      const response = await fetch(statusUrl, { headers: startParams.headers, signal });
      const body = await response.json();
      if (response.status === 202) { result = body; continue; }
      if (!response.ok) throw new Error(body.detail ?? response.statusText);
      return body;
    }
    return result;
  } catch (error) {
    // Only the gateway's 200 says the start is gone; anything else is said, never shown as "cancelled".
    const answer = await cancel().catch(() => null);
    const body = answer ? await answer.json().catch(() => ({})) : {};
    if (answer?.ok) throw signal?.aborted ? Object.assign(new Error("cancelled"), { cancelled: true }) : error;
    throw new Error(`the queued start could not be cancelled (${answer?.status ?? "no answer"}: ` +
                    `${body.detail ?? "network error"}); ${error.message ?? error}`);
  } finally {
    removeEventListener("pagehide", cancel);
  }
}

// Microphone and speaker handling for SmallWebRTC and WebSocket. Their default, Daily's media manager, loads a
// script from Daily's CDN; the WAV media manager needs nothing from outside the page (`?media=daily` picks
// Daily's). The Daily transport is Daily's own client and always needs Daily.
const mediaManager = () => (params.get("media") === "daily" ? new DailyMediaManager() : new WavMediaManager());
const TRANSPORTS = {
  webrtc: () => new SmallWebRTCTransport({ mediaManager: mediaManager() }),
  websocket: () => new WebSocketTransport({ mediaManager: mediaManager() }),
  daily: () => new DailyTransport(),
};

// Each SmallWebRTC offer the page posted through the gateway's session proxy (noted by index.html's script,
// which runs before client-js takes its reference to fetch).
const offers = window.offers ?? [];

let giveUp = null; // the queued start's AbortController, while one waits
let client = null; // the connected (or connecting) client

function connectionState(state) {
  const shown = { ready: "ready: connected to the bot", connected: "connected", connecting: "connecting…",
                  authenticating: "starting the bot…", disconnected: "disconnected" }[state] ?? state;
  setBox("connection", `transport: ${shown}`, state);
}

function explainFailure(transport, error) {
  const message = error?.message ?? String(error);
  if (transport === "webrtc" && offers.length) {
    const last = offers[offers.length - 1];
    return `the offer reached the bot through the gateway and was answered (${last.status}), but no media ` +
      `connection followed: the local Pipecat Cloud emulator's bot has none. Set PCC_PUBLIC_KEY (and ` +
      `PCC_AGENTS) before make dev to talk to a real bot. (${message})`;
  }
  if (transport === "daily") {
    return `the gateway started the bot and returned a Daily room, but the browser could not join it: the ` +
      `local emulator's rooms do not exist at Daily. With a real Pipecat Cloud this is where you hear the ` +
      `bot. (${message})`;
  }
  if (transport === "websocket") {
    return `the gateway returned the websocket URL and token; the connection ended: the local emulator's ` +
      `bot closes at once. With a real Pipecat Cloud this is where you hear the bot. (${message})`;
  }
  return message;
}

async function talk() {
  const transport = $("transport").value;
  offers.length = 0;
  delete $("connection").dataset.offers;
  client = new PipecatClient({
    transport: TRANSPORTS[transport](),
    enableMic: $("mic").checked,
    enableCam: false,
    callbacks: {
      onTransportStateChanged: connectionState,
      onTrackStarted: (track, participant) => {
        if (track.kind === "audio" && participant && !participant.local) {
          $("bot-audio").srcObject = new MediaStream([track]);
          setBox("connection", "transport: ready: the bot's audio is playing", "ready");
        }
      },
    },
  });
  setStatus("starting…", "starting");
  giveUp = new AbortController();
  $("cancel").hidden = false;
  let started = null;
  try {
    started = await startWithQueue(
      client,
      { endpoint: `${$("api").value}/start`, headers: authHeaders(),
        requestData: { transport, body: { source: "demo" } } },
      { signal: giveUp.signal,
        onQueued: (queued) => setStatus(
          `queued: position ${queued.position}, attempt ${queued.attempts}, next try ` +
          `${localTime(queued.nextAttemptAt)}`, "queued") },
    );
  } catch (error) {
    const message = error.message ?? String(error);
    if (error.cancelled) setStatus("cancelled: the queued start was given back", "cancelled");
    else if (/call object bundle/i.test(message)) {
      setStatus("error: the browser could not load Daily's client from Daily's CDN (is this machine offline?); " +
                `nothing was started. (${message})`, "error");
    } else setStatus(`error: ${message}`, "error");
    return;
  } finally {
    $("cancel").hidden = true;
    giveUp = null;
  }
  // websocket answers only {wsUrl, token}: its session id is my newest active session
  const sessionId = started.sessionId ?? (await newestActiveSession())?.sessionId ?? "";
  setStatus(`started: ${sessionId}`, "started");
  $("status").dataset.sessionId = sessionId;
  $("status").dataset.transport = transport;
  $("status").dataset.keys = Object.keys(started).sort().join(",");
  await listSessions();
  $("hang-up").hidden = false;
  // Connecting is not awaited here: the talk button guards the start (a double click must not start two
  // sessions), not the call, which lasts as long as the person talks.
  client.connect(started)
    .catch((error) => setBox("connection", `transport: ${explainFailure(transport, error)}`, "error"))
    .finally(() => { $("connection").dataset.offers = JSON.stringify(offers); });
}

async function hangUp() {
  await client?.disconnect().catch(() => {});
  $("hang-up").hidden = true;
  const sessionId = $("status").dataset.sessionId;
  if (sessionId) await stopSession(sessionId);
}

async function newestActiveSession() {
  const mine = await fetch(`${$("api").value}/sessions?status=active&limit=1`, { headers: authHeaders() });
  return mine.ok ? (await mine.json()).sessions?.[0] : undefined;
}

// What a user sees when the gateway refuses a request: client-js shows the error's `detail`.
async function startInvalid() {
  const refused = new PipecatClient({ transport: new SmallWebRTCTransport(), enableMic: false });
  try {
    await refused.startBot({ endpoint: `${$("api").value}/start`, headers: authHeaders(),
                             requestData: { transport: "carrier-pigeon" } });
    setStatus("unexpectedly started", "started");
  } catch (error) {
    setStatus(`error: ${error.message ?? error}`, "error");
  }
}

async function listSessions() {
  const list = $("sessions");
  const response = await fetch(`${$("api").value}/sessions?limit=20`, { headers: authHeaders() });
  const data = await response.json().catch(() => ({}));
  list.innerHTML = "";
  if (!response.ok) { // never a silently empty list: say why
    list.dataset.state = "error";
    setStatus(`error: could not list your sessions (${response.status}): ${data.detail ?? response.statusText}`,
              "error");
    return;
  }
  list.dataset.state = "listed";
  for (const session of data.sessions ?? []) {
    const item = document.createElement("li");
    item.dataset.sessionId = session.sessionId;
    item.dataset.status = session.status;
    item.textContent = `${session.sessionId} · ${session.transport} · ${session.status} · ` +
      `${localTime(session.createdAt)} `;
    if (session.status === "active") {
      const stop = document.createElement("button");
      stop.textContent = "Stop";
      stop.className = "stop";
      stop.onclick = busy(stop, () => stopSession(session.sessionId));
      item.appendChild(stop);
    }
    list.appendChild(item);
  }
}

async function stopSession(sessionId) {
  const response = await fetch(`${$("api").value}/sessions/${sessionId}`, {
    method: "DELETE", headers: authHeaders(),
  });
  const data = await response.json();
  setStatus(`${data.status ?? "error"}: ${sessionId}`, data.status ?? "error");
  await listSessions();
}

// A public page's visitor: the human-check widget's token (Turnstile's, hCaptcha's or reCAPTCHA's on a real page;
// make dev's fake siteverify passes any `pass-...` token) traded for a short-lived guest token, then the same start
// with it as the bearer token (docs/guests.md). The bot sees body.user = {id: "guest_...", guest: true}.
async function talkAsGuest() {
  const humanCheckToken = params.get("humanCheck") ?? `pass-${crypto.randomUUID()}`;
  const answer = await fetch(`${$("api").value}/guest`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ humanCheckToken }),
  });
  const data = await answer.json().catch(() => ({}));
  if (!answer.ok) {
    setStatus(`error: no guest token (${answer.status}): ${data.detail ?? answer.statusText}`, "error");
    return;
  }
  $("token").value = data.token;
  $("status").dataset.guestId = data.guestId;
  await talk();
}

// The operator view: one agent's gates, queue and sessions beside Pipecat Cloud's own count, with stop, block and
// gate buttons, through the admin API (an admin's token, or locally X-Dev-Groups with the dev user).
const AGENT = params.get("agent") || "my-agent";
let operatorTimer = null;

function adminHeaders() {
  const headers = authHeaders();
  if (!$("token").value.trim()) headers.set("X-Dev-Groups", $("admin-group").value.trim());
  return headers;
}

async function admin(method, path, body) {
  const response = await fetch(`${$("api").value}${path}`, {
    method, headers: adminHeaders(), body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(`${response.status}: ${data.detail ?? response.statusText}`);
  return data;
}

function showAgent(view) {
  const gates = [view.gates.organisation, view.gates.agent];
  const closed = gates.some((gate) => gate.closed);
  const reasons = gates.flatMap((gate) => Object.entries(gate.reasons)).map(([r, m]) => `${r}: ${m}`).join("; ");
  const head = view.queue.headAgeSeconds == null ? "" : ` (the head has waited ${view.queue.headAgeSeconds} s)`;
  const box = $("agent-view");
  Object.assign(box.dataset, { state: closed ? "error" : "listed", gate: closed ? "closed" : "open",
                               depth: view.queue.depth, ours: view.ourActiveSessions,
                               pipecat: view.pipecat?.activeSessionCount ?? "" });
  box.textContent = `${view.agent}: new starts ${closed ? `closed (${reasons})` : "open"} · queue ${view.queue.depth}` +
    `${head} · our active sessions ${view.ourActiveSessions} · Pipecat Cloud's ${view.pipecat?.activeSessionCount ?? "unknown"}`;
}

function showAdminSessions(sessions) {
  const list = $("admin-sessions");
  list.innerHTML = "";
  for (const session of sessions) {
    const item = document.createElement("li");
    item.dataset.sessionId = session.sessionId;
    item.dataset.userId = session.userId;
    item.textContent = `${session.userId} · ${session.sessionId} · ${localTime(session.createdAt)} `;
    const stop = document.createElement("button");
    stop.textContent = "Stop";
    stop.className = "admin-stop";
    stop.onclick = busy(stop, () => operatorAct(() => admin("DELETE", `/admin/sessions/${session.sessionId}`)));
    const block = document.createElement("button");
    block.textContent = "Block user";
    block.className = "admin-block";
    block.onclick = busy(block, () => operatorAct(() => admin(
      "POST", `/admin/users/${encodeURIComponent(session.userId)}/block`, { reason: "blocked from the demo" })));
    item.append(stop, block);
    list.appendChild(item);
  }
}

async function refreshOperator() {
  try {
    showAgent(await admin("GET", `/admin/agents/${encodeURIComponent(AGENT)}`));
    showAdminSessions((await admin("GET", `/admin/sessions?agent=${encodeURIComponent(AGENT)}&limit=50`)).sessions);
  } catch (error) {
    setBox("agent-view", `operator view: ${error.message}`, "error");
  }
}

async function operatorAct(action) {
  try {
    await action();
  } catch (error) {
    setBox("agent-view", `operator view: ${error.message}`, "error");
    return;
  }
  await refreshOperator();
}

function toggleOperator() {
  $("operator").hidden = !$("operator-on").checked;
  clearInterval(operatorTimer);
  operatorTimer = null;
  if ($("operator-on").checked) {
    refreshOperator();
    operatorTimer = setInterval(refreshOperator, 2000);
  }
}

const gate = (action) => () => operatorAct(() => admin("POST", "/admin/gates", {
  scope: "agent", agent: AGENT, action, message: action === "close" ? "Closed from the demo's operator view" : "",
}));

$("operator-on").onchange = toggleOperator;
$("gate-close").onclick = busy($("gate-close"), gate("close"));
$("gate-open").onclick = busy($("gate-open"), gate("open"));
$("talk").onclick = busy($("talk"), talk);
$("guest").onclick = busy($("guest"), talkAsGuest);
$("hang-up").onclick = busy($("hang-up"), hangUp);
$("cancel").onclick = () => giveUp?.abort();
$("start-invalid").onclick = busy($("start-invalid"), startInvalid);
$("list").onclick = busy($("list"), listSessions);
