// Drives the dashboard in headless Chromium (Debian's /usr/bin/chromium via
// playwright-core; no browser download):
//   node dashboard.mjs BASE_URL LAYERCAKE_BIN API NODES [SCREENSHOT.png]
// 1. the page loads and shows the node count;
// 2. n0001 is shown POWER_ON once the demo booted it;
// 3. after `layercake ctl set n0001 /PhysState=POWER_OFF` it turns off,
//    and after `ctl set n0001 /PhysState=POWER_ON` it turns on again;
// 4. clicking it opens its detail (Cfg vs Dsc, chain).
// Exits 0 on success, 1 with a message otherwise.
import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [base, bin, api, nodes, shot] = process.argv.slice(2);
if (!base || !bin || !api || !nodes) {
  console.error("usage: node dashboard.mjs BASE_URL LAYERCAKE_BIN API NODES [SCREENSHOT]");
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const profile = mkdtempSync(join(tmpdir(), "layercake-chromium-"));
const TIMEOUT = 45000;

function ctl(...args) {
  const out = execFileSync(bin, ["ctl", "--api", api, ...args], { encoding: "utf8" });
  console.log("ctl " + args.join(" ") + ": " + out.trim());
}

async function physOf(page, name) {
  return page.evaluate((n) => {
    const el = document.querySelector(`[data-n="${n}"]`);
    return el ? el.dataset.phys : null;
  }, name);
}

async function waitPhys(page, name, want) {
  await page.waitForFunction(
    ([n, w]) => {
      const el = document.querySelector(`[data-n="${n}"]`);
      return el && el.dataset.phys === w;
    },
    [name, want],
    { timeout: TIMEOUT, polling: 100 },
  );
  console.log(`${name} shows ${want}`);
}

const browser = await chromium.launchPersistentContext(profile, {
  executablePath,
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
let code = 0;
try {
  const page = browser.pages()[0] || (await browser.newPage());
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(base, { timeout: TIMEOUT });
  await page.waitForFunction(
    (n) => document.getElementById("node-count").textContent === n,
    nodes,
    { timeout: TIMEOUT },
  );
  console.log(`page shows ${nodes} nodes`);
  const count = await page.locator(".cells [data-n]").count();
  if (String(count) !== nodes) throw new Error(`grid has ${count} cells, want ${nodes}`);
  await waitPhys(page, "n0001", "POWER_ON");
  ctl("set", "n0001", "/PhysState=POWER_OFF");
  await waitPhys(page, "n0001", "POWER_OFF");
  ctl("set", "n0001", "/PhysState=POWER_ON");
  await waitPhys(page, "n0001", "POWER_ON");
  await page.click('[data-n="n0001"]');
  await page.waitForFunction(() => document.getElementById("detail-name").textContent === "n0001", null, { timeout: TIMEOUT });
  const rows = await page.locator("#detail-values tbody tr").count();
  if (rows < 5) throw new Error(`detail shows ${rows} rows`);
  console.log(`detail shows ${rows} values`);
  if (shot) await page.screenshot({ path: shot, fullPage: true });
  if (errors.length) throw new Error("page errors: " + errors.join("; "));
  console.log("dashboard test passed; n0001 is " + (await physOf(page, "n0001")));
} catch (e) {
  console.error("dashboard test failed: " + (e && e.stack ? e.stack : e));
  code = 1;
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(code);
