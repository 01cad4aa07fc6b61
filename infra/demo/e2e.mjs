// Drives the demo page in headless Debian Chromium (playwright-core, no browser download).
// Usage: node e2e.mjs <demoUrl> <apiUrl> <emulatorUrl> <screenshotPath>
import { chromium } from "playwright-core";

const [demoUrl, apiUrl, emulatorUrl, screenshot] = process.argv.slice(2);
const admin = (path, body) => fetch(`${emulatorUrl}/_emulator/${path}`, {
  method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body ?? {}),
});

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--use-fake-ui-for-media-stream",
         "--use-fake-device-for-media-stream"],
});
const result = { consoleErrors: [] };
try {
  const page = await browser.newPage();
  page.on("pageerror", (e) => result.consoleErrors.push(String(e)));
  const user = `browser-${Date.now()}`;
  await page.goto(`${demoUrl}/index.html?api=${encodeURIComponent(apiUrl)}&user=${user}`);

  // 1. a direct start
  await page.click("#start");
  await page.waitForSelector('#status[data-state="started"]', { timeout: 20000 });
  result.started = await page.textContent("#status");
  result.sessionId = await page.getAttribute("#status", "data-session-id");
  await page.waitForSelector(`li[data-session-id="${result.sessionId}"]`);
  result.listed = await page.$$eval("#sessions li", (items) => items.map((li) => li.dataset.sessionId));

  // 1b. a refused request: client-js shows our `detail`, a readable sentence
  await page.click("#start-invalid");
  await page.waitForSelector('#status[data-state="error"]', { timeout: 20000 });
  result.invalidText = await page.textContent("#status");

  // 1c. a websocket start with an 8 KB body: compact wsUrl, session id from GET /sessions
  await page.click("#start-ws");
  await page.waitForSelector('#ws[data-state="started"], #ws[data-state="error"]', { timeout: 20000 });
  result.ws = await page.$eval("#ws", (el) => ({ ...el.dataset, text: el.textContent }));
  result.wsSessions = await (await fetch(`${emulatorUrl}/v1/agents/my-agent/sessions?status=active&limit=50`,
    { headers: { Authorization: "Bearer sk_emulator_private" } })).json();

  // 2. at capacity: the 202 is polled by the helper until capacity frees
  await admin("agents/my-agent", { max_agents: 0 });
  await page.click("#start");
  await page.waitForSelector('#status[data-state="queued"]', { timeout: 20000 });
  result.queuedText = await page.textContent("#status");
  await page.screenshot({ path: screenshot.replace(".png", "-queued.png") });
  await admin("agents/my-agent", { max_agents: 50 });
  await page.waitForSelector('#status[data-state="started"]', { timeout: 60000 });
  result.startedAfterQueue = await page.getAttribute("#status", "data-session-id");

  // 2b. at capacity again: give up while queued; the helper cancels, so nothing waits and no bot starts
  await admin("agents/my-agent", { max_agents: 0 });
  await page.click("#start");
  await page.waitForSelector('#status[data-state="queued"]', { timeout: 20000 });
  await page.click("#cancel");
  await page.waitForSelector('#status[data-state="cancelled"]', { timeout: 20000 });
  result.cancelledText = await page.textContent("#status");
  result.pendingAfterCancel = (await (await fetch(`${apiUrl}/start`, { headers: { "X-Dev-User": user } })).json());
  await admin("agents/my-agent", { max_agents: 50 });

  // 3. stop the first session from the list
  await page.click("#list");
  await page.click(`li[data-session-id="${result.sessionId}"] button.stop`);
  await page.waitForSelector(`li[data-session-id="${result.sessionId}"][data-status="stopped"]`);
  result.stoppedStatus = await page.textContent("#status");
  await page.screenshot({ path: screenshot, fullPage: true });
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
