// The dashboard's summary view of a large cluster in headless Chromium
// (Debian's /usr/bin/chromium via playwright-core):
//   node summary.mjs BASE_URL NODES RACKS SCREENSHOT.png
// 1. the page opens in the summary view: one tile per rack, the counts
//    add up to NODES, no per-node cells are built, and it fits one screen;
// 2. a screenshot of that view is written to SCREENSHOT;
// 3. a click on a rack's tile expands its cells;
// 4. the rack's "power off" action (admin: the page is opened with
//    #admin), confirmed, turns every node of the rack off, which the tile's
//    counts then show.
// Exits 0 on success, 1 with a message otherwise.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [base, nodes, racks, shot] = process.argv.slice(2);
if (!base || !nodes || !racks || !shot) {
  console.error("usage: node summary.mjs BASE_URL NODES RACKS SCREENSHOT");
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const profile = mkdtempSync(join(tmpdir(), "layercake-chromium-"));
const TIMEOUT = 120000;

const browser = await chromium.launchPersistentContext(profile, {
  executablePath,
  headless: true,
  viewport: { width: 1600, height: 1000 },
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
  const dialogs = [];
  page.on("dialog", (d) => { dialogs.push(d.message()); d.accept(); });
  const t0 = Date.now();
  await page.goto(base + "#admin", { timeout: TIMEOUT });
  await page.waitForFunction(
    (n) => document.getElementById("node-count").textContent === n,
    nodes,
    { timeout: TIMEOUT },
  );
  console.log(`page shows ${nodes} nodes after ${Date.now() - t0} ms`);
  const view = await page.evaluate(() => ({
    summary: document.body.classList.contains("summary-view"),
    tiles: document.querySelectorAll(".rack.summary").length,
    total: [...document.querySelectorAll(".rack.summary")].reduce((a, t) => a + Number(t.dataset.total), 0),
    cells: document.querySelectorAll(".cells [data-n]").length,
    height: document.documentElement.scrollHeight,
    viewport: window.innerHeight,
  }));
  console.log("summary view: " + JSON.stringify(view));
  if (!view.summary) throw new Error("the page did not open in the summary view");
  if (String(view.tiles) !== racks) throw new Error(`${view.tiles} rack tiles, want ${racks}`);
  if (String(view.total) !== nodes) throw new Error(`tiles count ${view.total} nodes, want ${nodes}`);
  if (view.cells !== 0) throw new Error(`${view.cells} node cells built in the summary view`);
  if (view.height > view.viewport) throw new Error(`summary is ${view.height} px high, screen ${view.viewport}`);
  await page.screenshot({ path: shot, fullPage: true });
  if (statSync(shot).size < 10000) throw new Error("screenshot is nearly empty");
  console.log(`screenshot ${shot}`);

  const [first, second] = await page.evaluate(() =>
    [...document.querySelectorAll(".rack.summary")].slice(0, 2).map((t) => t.dataset.rack));
  const tile = (r) => `.rack[data-rack="${r}"]`;

  // Expand the first rack.
  const size = await page.evaluate((sel) => Number(document.querySelector(sel).dataset.total), tile(first));
  await page.click(tile(first) + " h2");
  const cells = await page.locator(tile(first) + " .cells [data-n]").count();
  if (cells !== size) throw new Error(`${first} expanded to ${cells} cells, want ${size}`);
  console.log(`${first} expands to ${cells} cells`);

  // Power the second rack off from its tile, confirmed.
  const size2 = await page.evaluate((sel) => Number(document.querySelector(sel).dataset.total), tile(second));
  await page.click(tile(second) + ' button[data-op="off"]');
  if (dialogs.length !== 1 || !dialogs[0].includes(`power off rack ${second}`)) {
    throw new Error("no confirmation before the action: " + JSON.stringify(dialogs));
  }
  await page.waitForFunction(
    ([sel, n]) => Number(document.querySelector(sel).dataset.p1) === n,
    [tile(second), size2],
    { timeout: TIMEOUT, polling: 250 },
  );
  console.log(`${second} tile shows ${size2} nodes POWER_OFF; status: ` + (await page.textContent("#status")));
  if (errors.length) throw new Error("page errors: " + errors.join("; "));
  console.log("summary test passed");
} catch (e) {
  console.error("summary test failed: " + (e && e.stack ? e.stack : e));
  code = 1;
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(code);
