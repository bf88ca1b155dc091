// The sidecar's web page in headless Chromium (Debian's chromium, driven by playwright-core).
import { afterAll, expect, test } from "bun:test";
import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { chromium } from "playwright-core";
import { connect } from "../../client/index.ts";
import { SidecarProcess } from "../helpers/sidecar-process.ts";

const executablePath = process.env.DTX_CHROMIUM ?? "/usr/bin/chromium";
const haveChromium = existsSync(executablePath);
const required = process.env.CI === "true";
if (!haveChromium) console.log(`dashboard test ${required ? "must run under CI but" : "skipped:"} no Chromium at ${executablePath} (scripts/prepare-services.sh installs it)`);

let sc: SidecarProcess | undefined;
afterAll(async () => sc?.cleanup());

(haveChromium || required ? test : test.skip)("load the dashboard, filter by state, open a transaction's timeline, save a screenshot", async () => {
  sc = await new SidecarProcess({ id: "dash" }).start();
  const dtx = await connect({ socket: sc.socket });
  const other = await connect({ socket: sc.socket });
  await dtx.beginDistributed("order-1", async (tx) => {
    await tx.put("orders/1", 1);
    await other.join(tx.context, (t) => t.put("stock/1", 9));
  });
  await dtx.commitDistributed("order-1");
  await dtx.beginDistributed("order-2", (tx) => tx.put("orders/2", 2));
  await dtx.rollbackDistributed("order-2");
  await dtx.beginDistributed("order-3", (tx) => tx.put("orders/3", 3));

  const browser = await chromium.launch({
    executablePath,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1100, height: 700 } });
    await page.goto(`http://127.0.0.1:${sc.port}/`);
    await page.waitForSelector("tr.txn");
    expect(await page.locator("tr.txn").count()).toBe(3);

    await page.selectOption("#state", "committed");
    await page.waitForFunction('document.querySelectorAll("tr.txn").length === 1');
    expect(await page.locator("tr.txn td").first().textContent()).toBe("order-1");

    await page.click('tr.txn[data-name="order-1"]');
    await page.waitForSelector("#tl-events li");
    const events = await page.locator("#tl-events li").allTextContents();
    expect(events.some((e) => e.includes("begin (2pc)"))).toBe(true);
    expect(events.some((e) => e.includes("vote yes"))).toBe(true);
    expect(events.some((e) => e.includes("decision: commit"))).toBe(true);
    expect(events.some((e) => e.includes("end: committed"))).toBe(true);
    expect(await page.locator("#tl-title").textContent()).toBe("order-1 — committed");

    await page.fill("#filter", "nothing-matches");
    await page.waitForFunction('document.querySelectorAll("tr.txn").length === 0');
    await page.fill("#filter", "");

    const shot = join(process.env.DTX_SCREENSHOT_DIR ?? tmpdir(), "dtx-dashboard.png");
    await page.screenshot({ path: shot, fullPage: true });
    expect(statSync(shot).size).toBeGreaterThan(5_000);
    console.log(`dashboard screenshot: ${shot}`);
  } finally {
    await browser.close();
    dtx.close();
    other.close();
  }
}, 60_000);
