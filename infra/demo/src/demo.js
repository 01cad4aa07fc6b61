// pipecat-gateway demo: the real @pipecat-ai/client-js talking to the gateway's /start (never to
// Pipecat Cloud directly), with the small polling helper for queued (202) starts.
import { PipecatClient } from "@pipecat-ai/client-js";
import { SmallWebRTCTransport } from "@pipecat-ai/small-webrtc-transport";

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
$("api").value = params.get("api") || "http://127.0.0.1:8000";
$("user").value = params.get("user") || "demo-user";

function authHeaders() {
  const headers = new Headers({ "Content-Type": "application/json" });
  const token = $("token").value.trim();
  if (token) headers.set("Authorization", `Bearer ${token}`);
  else headers.set("X-Dev-User", $("user").value.trim()); // local stage only
  return headers;
}

function setStatus(text, state) {
  $("status").textContent = text;
  $("status").dataset.state = state;
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
    await cancel().catch(() => {});
    throw error;
  } finally {
    removeEventListener("pagehide", cancel);
  }
}

let giveUp = null; // the queued start's AbortController, while one waits

async function start() {
  const client = new PipecatClient({ transport: new SmallWebRTCTransport(), enableMic: false });
  setStatus("starting…", "starting");
  giveUp = new AbortController();
  $("cancel").hidden = false;
  try {
    const result = await startWithQueue(
      client,
      { endpoint: `${$("api").value}/start`, headers: authHeaders(),
        requestData: { transport: "webrtc", body: { source: "demo" } } },
      { signal: giveUp.signal,
        onQueued: (queued) => setStatus(
          `queued: position ${queued.position}, attempt ${queued.attempts}, next try ${queued.nextAttemptAt}`,
          "queued") },
    );
    setStatus(`started: ${result.sessionId}`, "started");
    $("status").dataset.sessionId = result.sessionId;
    await listSessions();
  } catch (error) {
    if (giveUp?.signal.aborted) setStatus("cancelled: the queued start was given back", "cancelled");
    else setStatus(`error: ${error.message ?? error}`, "error");
  } finally {
    $("cancel").hidden = true;
    giveUp = null;
  }
}

// A websocket start with a body. The body (8 KB here) reaches the bot through the authenticated session,
// never in the URL, so wsUrl stays compact. The websocket transport accepts only {wsUrl, token}, so the
// page learns its session id the documented way: my newest active session.
async function startWebsocket() {
  const client = new PipecatClient({ transport: new SmallWebRTCTransport(), enableMic: false });
  const ws = $("ws");
  try {
    const result = await client.startBot({
      endpoint: `${$("api").value}/start`, headers: authHeaders(),
      requestData: { transport: "websocket", body: { source: "demo", notes: "n".repeat(8000) } },
    });
    const mine = await fetch(`${$("api").value}/sessions?status=active&limit=1`, { headers: authHeaders() });
    const newest = (await mine.json()).sessions?.[0];
    ws.dataset.keys = Object.keys(result).sort().join(",");
    ws.dataset.wsUrl = result.wsUrl;
    ws.dataset.sessionId = newest?.sessionId ?? "";
    ws.dataset.state = "started";
    ws.textContent = `websocket: ${result.wsUrl} (session ${ws.dataset.sessionId})`;
  } catch (error) {
    ws.dataset.state = "error";
    ws.textContent = `error: ${error.message ?? error}`;
  }
}

// What a user sees when the gateway refuses a request: client-js shows the error's `detail`.
async function startInvalid() {
  const client = new PipecatClient({ transport: new SmallWebRTCTransport(), enableMic: false });
  try {
    await client.startBot({ endpoint: `${$("api").value}/start`, headers: authHeaders(),
                            requestData: { transport: "carrier-pigeon" } });
    setStatus("unexpectedly started", "started");
  } catch (error) {
    setStatus(`error: ${error.message ?? error}`, "error");
  }
}

async function listSessions() {
  const response = await fetch(`${$("api").value}/sessions?limit=20`, { headers: authHeaders() });
  const data = await response.json();
  const list = $("sessions");
  list.innerHTML = "";
  for (const session of data.sessions ?? []) {
    const item = document.createElement("li");
    item.dataset.sessionId = session.sessionId;
    item.dataset.status = session.status;
    item.textContent = `${session.sessionId} · ${session.transport} · ${session.status} `;
    if (session.status === "active") {
      const stop = document.createElement("button");
      stop.textContent = "Stop";
      stop.className = "stop";
      stop.onclick = () => stopSession(session.sessionId);
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

$("start").onclick = start;
$("cancel").onclick = () => giveUp?.abort();
$("start-ws").onclick = startWebsocket;
$("start-invalid").onclick = startInvalid;
$("list").onclick = listSessions;
