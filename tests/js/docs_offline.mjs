// Opens nubi's /docs in Debian's Chromium with every request off 127.0.0.1 refused, as on a machine
// without a network, and reports how many API operations Swagger UI rendered and what it tried to fetch.
// Usage: node docs_offline.mjs <baseUrl> <profileDir>
import { chromium } from "playwright-core";

const [base, profileDir] = process.argv.slice(2);
const context = await chromium.launchPersistentContext(profileDir, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"],
});
const refused = [];
await context.route("**/*", (route) => {
  const host = new URL(route.request().url()).hostname;
  if (host === "127.0.0.1" || host === "localhost") return route.continue();
  refused.push(route.request().url());
  return route.abort("internetdisconnected");
});
const page = context.pages()[0] || (await context.newPage());
const problems = [];
page.on("pageerror", (err) => problems.push(String(err)));
let result;
try {
  await page.goto(`${base}/docs`);
  await page.waitForSelector(".opblock", { timeout: 15000 });
  result = { operations: await page.locator(".opblock").count(), title: await page.title(), refused, problems };
} catch (err) {
  result = { error: String(err), refused, problems };
} finally {
  await context.close();
}
process.stdout.write(`${JSON.stringify(result)}\n`);
