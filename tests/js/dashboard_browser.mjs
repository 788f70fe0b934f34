// Drives the nubi dashboard in Debian's Chromium through playwright-core (no downloaded browser).
// Usage: node dashboard_browser.mjs <url> <profileDir> [apiKey]. Talks JSON lines: commands on stdin,
// results on stdout, so the pytest side can act through the service API between steps.
import readline from "node:readline";
import { chromium } from "playwright-core";

const [url, profileDir, apiKey] = process.argv.slice(2);
const out = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);
const commands = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const counter = (id) => `#active [data-raid-id="${id}"] [data-testid="participants"]`;

const context = await chromium.launchPersistentContext(profileDir, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1280, height: 900 },
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const page = context.pages()[0] || (await context.newPage());
const problems = [];
page.on("pageerror", (err) => problems.push(String(err)));
page.on("console", (msg) => { if (msg.type() === "error") problems.push(msg.text()); });

try {
  await page.goto(url);
  if (apiKey) { // the page asks for the key, as a person would type it
    await page.waitForSelector("#keyform:not([hidden])", { timeout: 10000 });
    await page.fill("#apikey", apiKey);
    await page.click("#keyform button");
  }
  await page.waitForSelector("#conn.live", { timeout: 10000 });
  out({ step: "loaded" });
  for await (const line of commands) {
    const cmd = JSON.parse(line);
    if (cmd.do === "card") {
      await page.waitForSelector(counter(cmd.raidId), { timeout: 5000 });
      out({ step: "card", participants: await page.textContent(counter(cmd.raidId)) });
    } else if (cmd.do === "counter") {
      const started = Date.now();
      await page.waitForFunction(([sel, want]) => document.querySelector(sel)?.textContent === want,
        [counter(cmd.raidId), cmd.expect], { timeout: cmd.within });
      out({ step: "counter", ms: Date.now() - started });
    } else if (cmd.do === "text") {
      await page.waitForFunction(([sel, want]) => document.querySelector(sel)?.textContent.includes(want),
        [cmd.selector, cmd.expect], { timeout: cmd.within });
      out({ step: "text", text: await page.textContent(cmd.selector) });
    } else if (cmd.do === "screenshot") {
      await page.setViewportSize({ width: cmd.width, height: cmd.height });
      await page.waitForTimeout(300);
      await page.screenshot({ path: cmd.path, fullPage: true });
      out({ step: "screenshot", path: cmd.path });
    } else if (cmd.do === "quit") {
      out({ step: "quit", problems });
      break;
    }
  }
} catch (err) {
  out({ step: "error", message: String(err), problems });
  process.exitCode = 1;
} finally {
  await context.close();
  process.exit(); // stdin may still be open
}
