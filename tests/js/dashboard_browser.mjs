// Drives the nubi dashboard in Debian's Chromium through playwright-core (no downloaded browser).
// Usage: node dashboard_browser.mjs <url> <profileDir> [apiKey | --no-key]. Talks JSON lines: commands on
// stdin, results on stdout, so the pytest side can act through the service API between steps.
// With an apiKey the page is signed in as a person would (typing it); with --no-key it stops at the
// key form; with neither it waits until the page is live.
import { createRequire } from "node:module";
import readline from "node:readline";
import { chromium } from "playwright-core";

const require = createRequire(import.meta.url);
const AXE = require.resolve("axe-core/axe.min.js");
const WCAG = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"];
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
page.on("console", (msg) => {
  // The page logs refused API calls with console.warn; a browser's own "failed to load resource" for a
  // 4xx answer the page expects (e.g. a 404 from a route another version adds) is not a problem.
  if (msg.type() === "error" && !/Failed to load resource: the server responded with a status of 4\d\d/.test(msg.text())) {
    problems.push(msg.text());
  }
});

async function axe() {
  if (!(await page.evaluate(() => Boolean(window.axe)))) await page.addScriptTag({ path: AXE });
  const result = await page.evaluate((tags) => window.axe.run(document, { runOnly: { type: "tag", values: tags } }), WCAG);
  return result.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.map((n) => `${n.target.join(" ")}: ${n.failureSummary}`) }));
}

// Press Tab until the element matching `selector` has the focus; report how it looks focused.
async function tabTo(selector, most) {
  for (let i = 0; i < most; i += 1) {
    await page.keyboard.press("Tab");
    const here = await page.evaluate((sel) => {
      const el = document.activeElement;
      if (!el || !el.matches(sel)) return null;
      const style = getComputedStyle(el);
      return { tag: el.tagName.toLowerCase(), outline: `${style.outlineStyle} ${style.outlineWidth}`,
        focusVisible: el.matches(":focus-visible") };
    }, selector);
    if (here) return { ...here, tabs: i + 1 };
  }
  throw new Error(`${selector} was not reached with ${most} presses of Tab`);
}

try {
  await page.goto(url);
  if (apiKey === "--no-key") {
    await page.waitForSelector("#keyform:not([hidden])", { timeout: 10000 });
  } else {
    if (apiKey) { // the page asks for the key, as a person would type it
      await page.waitForSelector("#keyform:not([hidden])", { timeout: 10000 });
      await page.fill("#apikey", apiKey);
      await page.click("#keyform button[type=submit]");
    }
    await page.waitForSelector("#conn.live", { timeout: 10000 });
  }
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
    } else if (cmd.do === "visible") {
      await page.waitForSelector(cmd.selector, { state: cmd.hidden ? "hidden" : "visible", timeout: cmd.within || 5000 });
      out({ step: "visible" });
    } else if (cmd.do === "count") {
      out({ step: "count", count: await page.locator(cmd.selector).count() });
    } else if (cmd.do === "focused") {
      out({ step: "focused", ...(await page.evaluate(() => ({ id: document.activeElement?.id || null,
        label: document.activeElement?.getAttribute("aria-label") || document.activeElement?.textContent || null }))) });
    } else if (cmd.do === "texts") {
      out({ step: "texts", texts: await page.locator(cmd.selector).allTextContents() });
    } else if (cmd.do === "attr") {
      out({ step: "attr", value: await page.getAttribute(cmd.selector, cmd.name) });
    } else if (cmd.do === "fill") {
      await page.fill(cmd.selector, cmd.value);
      out({ step: "fill" });
    } else if (cmd.do === "select") {
      await page.selectOption(cmd.selector, cmd.value);
      out({ step: "select" });
    } else if (cmd.do === "click") {
      await page.click(cmd.selector);
      out({ step: "click" });
    } else if (cmd.do === "key") { // a key press on a control reached with the keyboard
      const reached = await tabTo(cmd.selector, cmd.most || 80);
      await page.keyboard.press(cmd.key);
      out({ step: "key", ...reached });
    } else if (cmd.do === "storage") {
      out({ step: "storage", ...(await page.evaluate(() => ({ session: sessionStorage.getItem("nubi.apiKey"), local: localStorage.getItem("nubi.apiKey") }))) });
    } else if (cmd.do === "listen") { // record what the live region says, with when
      await page.evaluate(() => {
        window.__said = [];
        const region = document.getElementById("announcer");
        new MutationObserver(() => window.__said.push({ t: Date.now(), text: region.textContent }))
          .observe(region, { childList: true, characterData: true, subtree: true });
      });
      out({ step: "listen" });
    } else if (cmd.do === "heard") {
      out({ step: "heard", said: await page.evaluate(() => window.__said) });
    } else if (cmd.do === "axe") {
      out({ step: "axe", violations: await axe() });
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
