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

  // 2. at capacity: the 202 is polled by the helper until capacity frees
  await admin("agents/my-agent", { max_agents: 0 });
  await page.click("#start");
  await page.waitForSelector('#status[data-state="queued"]', { timeout: 20000 });
  result.queuedText = await page.textContent("#status");
  await page.screenshot({ path: screenshot.replace(".png", "-queued.png") });
  await admin("agents/my-agent", { max_agents: 50 });
  await page.waitForSelector('#status[data-state="started"]', { timeout: 60000 });
  result.startedAfterQueue = await page.getAttribute("#status", "data-session-id");

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
