// Drives the demo page in headless Debian Chromium (playwright-core, no browser download) against the local
// stack: each transport connected through the gateway as far as the emulator lets it, a queued start served
// and one cancelled, a double click, a refused request, a 401, local times, the favicon and a narrow screen.
// Usage: node e2e.mjs <demoUrl> <apiUrl> <emulatorUrl> <screenshotPath>
import { chromium } from "playwright-core";

const [demoUrl, apiUrl, emulatorUrl, screenshot] = process.argv.slice(2);
const admin = (path, body) => fetch(`${emulatorUrl}/_emulator/${path}`, {
  method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body ?? {}),
});
const emulatorGet = async (path) => (await fetch(`${emulatorUrl}/_emulator/${path}`)).json();

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--use-fake-ui-for-media-stream",
         "--use-fake-device-for-media-stream", "--autoplay-policy=no-user-gesture-required"],
});
const result = { consoleErrors: [] };
const user = `browser-${Date.now()}`;
const botsOf = async () => (await emulatorGet("sessions")).sessions.filter((s) => s.body?.user?.id === user);
try {
  const page = await browser.newPage();
  page.on("pageerror", (e) => result.consoleErrors.push(String(e)));
  await page.goto(`${demoUrl}/index.html?api=${encodeURIComponent(apiUrl)}&user=${user}`);
  result.favicon = (await fetch(`${demoUrl}/${await page.getAttribute('link[rel="icon"]', "href")}`)).status;
  const talk = async (transport) => {
    await page.selectOption("#transport", transport);
    await page.click("#talk");
  };
  const started = async () => {
    try {
      await page.waitForSelector('#status[data-state="started"]', { timeout: 30000 });
    } catch (error) { // say what the page showed instead
      throw new Error(`${error.message}\npage status: ${await page.textContent("#status")}`);
    }
    return page.$eval("#status", (el) => ({ ...el.dataset, text: el.textContent }));
  };
  const hangUp = async () => { // as a person would before the next call: USER_SESSION_LIMIT is 3
    await page.click("#hang-up");
    await page.waitForSelector('#status[data-state="stopped"]', { timeout: 20000 });
  };
  const connectionSettled = () => page.waitForSelector(
    '#connection[data-state="error"], #connection[data-state="ready"], #connection[data-state="disconnected"]',
    { timeout: 30000 });

  // 1. SmallWebRTC (the default), double-clicked: one session, its offer through the gateway's proxy
  await page.selectOption("#transport", "webrtc");
  await page.dblclick("#talk");
  result.webrtc = await started();
  await connectionSettled();
  await page.waitForFunction(() => document.getElementById("connection").dataset.offers !== undefined,
                             null, { timeout: 30000 });
  result.webrtcConnection = await page.$eval("#connection", (el) => ({ ...el.dataset, text: el.textContent }));
  result.botsAfterDoubleClick = (await botsOf()).length;
  result.offerCalls = (await emulatorGet("proxy-calls"))
    .filter((c) => c.sessionId === result.webrtc.sessionId && c.path === "api/offer" && c.method === "POST").length;
  await page.waitForSelector(`li[data-session-id="${result.webrtc.sessionId}"]`);
  result.listedText = await page.textContent(`li[data-session-id="${result.webrtc.sessionId}"]`);

  // 1b. a refused request: client-js shows our `detail`, a readable sentence
  await page.click("#start-invalid");
  await page.waitForSelector('#status[data-state="error"]', { timeout: 20000 });
  result.invalidText = await page.textContent("#status");

  // 2. WebSocket: exactly {token, wsUrl} from the gateway, the session id from GET /sessions, the token redeemed
  await talk("websocket");
  result.websocket = await started();
  await connectionSettled();
  result.websocketConnection = await page.$eval("#connection", (el) => ({ ...el.dataset, text: el.textContent }));
  result.websocketBot = (await botsOf()).find((s) => s.sessionId === result.websocket.sessionId) ?? null;
  await hangUp();

  // 3. Daily: a room from the gateway; joining it needs the real Daily, and the page says so plainly (with the
  // microphone off: Daily's client opens it through a script on Daily's CDN, out of reach here)
  await page.uncheck("#mic");
  await talk("daily");
  result.daily = await started();
  await connectionSettled();
  result.dailyConnection = await page.$eval("#connection", (el) => ({ ...el.dataset, text: el.textContent }));
  await hangUp();
  result.hungUpStatus = await page.textContent("#status");
  await page.check("#mic");

  // 4. at capacity, over websocket: the 202 goes through the queue helper until capacity frees
  await admin("agents/my-agent", { max_agents: 0 });
  await talk("websocket");
  await page.waitForSelector('#status[data-state="queued"]', { timeout: 20000 });
  result.queuedText = await page.textContent("#status");
  await page.screenshot({ path: screenshot.replace(".png", "-queued.png") });
  await admin("agents/my-agent", { max_agents: 50 });
  result.startedAfterQueue = await started();
  await hangUp();

  // 5. at capacity again: give up while queued; the helper cancels, so nothing waits and no bot starts
  await admin("agents/my-agent", { max_agents: 0 });
  const botsBefore = (await botsOf()).length;
  await talk("webrtc");
  await page.waitForSelector('#status[data-state="queued"]', { timeout: 20000 });
  await page.click("#cancel");
  await page.waitForSelector('#status[data-state="cancelled"]', { timeout: 20000 });
  result.cancelledText = await page.textContent("#status");
  result.pendingAfterCancel = await (await fetch(`${apiUrl}/start`, { headers: { "X-Dev-User": user } })).json();
  await admin("agents/my-agent", { max_agents: 50 });
  result.botsStartedByCancelled = (await botsOf()).length - botsBefore;

  // 6. stop the first session from the list
  await page.click("#list");
  await page.click(`li[data-session-id="${result.webrtc.sessionId}"] button.stop`);
  await page.waitForSelector(`li[data-session-id="${result.webrtc.sessionId}"][data-status="stopped"]`);
  result.stoppedStatus = await page.textContent("#status");

  // 7. a 401 on the list says so, never a silently empty list
  await page.fill("#token", "not-a-jwt");
  await page.click("#list");
  await page.waitForSelector('#sessions[data-state="error"]', { state: "attached", timeout: 20000 });
  result.unauthorizedText = await page.textContent("#status");
  await page.fill("#token", "");

  // 7b. a guest: the fake widget's token for a guest token, then a Daily start with it, seen by the bot as a guest
  await page.uncheck("#mic");
  await page.selectOption("#transport", "daily");
  await page.click("#guest");
  result.guest = await started();
  await connectionSettled();
  result.guestBot = (await emulatorGet("sessions")).sessions
    .find((s) => s.sessionId === result.guest.sessionId)?.body?.user ?? null;
  await page.waitForSelector(`li[data-session-id="${result.guest.sessionId}"]`);
  result.guestListed = await page.$$eval("#sessions li", (items) => items.map((li) => li.dataset.sessionId));
  await hangUp();
  result.guestHungUp = await page.textContent("#status");
  await page.fill("#token", "");
  await page.check("#mic");

  // 7c. the operator view: our counts beside the emulator's, a user blocked (their bot gone), the gate closed and
  // opened from the page
  const victim = `victim-${Date.now()}`;
  const startAs = (who) => fetch(`${apiUrl}/start`, {
    method: "POST", headers: { "Content-Type": "application/json", "X-Dev-User": who },
    body: JSON.stringify({ transport: "daily" }),
  });
  const victimSession = (await (await startAs(victim)).json()).sessionId;
  await page.check("#operator-on");
  await page.waitForSelector(`#admin-sessions li[data-session-id="${victimSession}"]`, { timeout: 20000 });
  result.operatorView = await page.$eval("#agent-view", (el) => ({ ...el.dataset, text: el.textContent }));
  result.emulatorActive = (await emulatorGet("sessions")).sessions
    .filter((s) => s.agent === "my-agent" && s.active && s.connected).length;
  await page.click(`#admin-sessions li[data-session-id="${victimSession}"] button.admin-block`);
  await page.waitForSelector(`#admin-sessions li[data-session-id="${victimSession}"]`,
                             { state: "detached", timeout: 20000 });
  result.victimBotActive = (await emulatorGet("sessions")).sessions
    .find((s) => s.sessionId === victimSession)?.active ?? null;
  const victimList = await fetch(`${apiUrl}/sessions`, { headers: { "X-Dev-User": victim } });
  result.victimListed = { status: victimList.status, code: (await victimList.json()).code };
  await page.click("#gate-close");
  await page.waitForSelector('#agent-view[data-gate="closed"]', { timeout: 20000 });
  result.closedView = await page.textContent("#agent-view");
  const whileClosed = await startAs(`${user}-gate`);
  result.startWhileClosed = { status: whileClosed.status, code: (await whileClosed.json()).code };
  await page.click("#gate-open");
  await page.waitForSelector('#agent-view[data-gate="open"]', { timeout: 20000 });
  const afterOpen = await startAs(`${user}-gate`);
  result.startAfterOpen = afterOpen.status;
  await fetch(`${apiUrl}/sessions/${(await afterOpen.json()).sessionId}`,
              { method: "DELETE", headers: { "X-Dev-User": `${user}-gate` } });
  await page.uncheck("#operator-on");
  await page.screenshot({ path: screenshot, fullPage: true });

  // 8. a narrow screen: nothing wider than the viewport
  await page.setViewportSize({ width: 360, height: 740 });
  result.narrowOverflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  await page.screenshot({ path: screenshot.replace(".png", "-narrow.png"), fullPage: true });
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
