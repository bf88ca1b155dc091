// The sidecar's web page in headless Chromium (Debian's chromium, driven by playwright-core),
// against real sidecar processes. The stuck threshold is the page's ?stuckMs= parameter.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { type Browser, type Page, chromium } from "playwright-core";
import { type Client, connect } from "../../client/index.ts";
import { freePorts, waitForLinks } from "../helpers/federation.ts";
import { HttpParticipant } from "../helpers/http-participant.ts";
import { SidecarProcess, tempDir } from "../helpers/sidecar-process.ts";

const executablePath = process.env.DTX_CHROMIUM ?? "/usr/bin/chromium";
const haveChromium = existsSync(executablePath);
const required = process.env.CI === "true";
if (!haveChromium) console.log(`dashboard test ${required ? "must run under CI but" : "skipped:"} no Chromium at ${executablePath} (scripts/prepare-services.sh installs it)`);
const run = haveChromium || required ? describe : describe.skip;

const dir = tempDir("dtx-dash-");
const [portDash, portPeer] = freePorts(2);
let sc: SidecarProcess;
let peer: SidecarProcess;
let browser: Browser;
const clients: Client[] = [];
/** Misbehaving participants: one refuses every commit (its transaction stays `committing`), one every compensation (its saga ends `failed`). */
let holdsCommit: HttpParticipant;
let refusesCompensate: HttpParticipant;
let failsExecute: HttpParticipant;

const loaded = (page: Page) => page.waitForSelector('body[data-state="loaded"]');
async function open(path = "/", target = () => sc): Promise<Page> {
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  await page.goto(`http://127.0.0.1:${target().port}${path}`);
  return page;
}
const attention = (page: Page, name: string) => page.locator(`tr.txn[data-name="${name}"]`).getAttribute("data-attention");

run("the dashboard", () => {
  beforeAll(async () => {
    holdsCommit = new HttpParticipant("holds-commit", { unavailable: new Set(["commit"]) });
    refusesCompensate = new HttpParticipant("refuses-compensate", { unavailable: new Set(["compensate"]) });
    failsExecute = new HttpParticipant("fails-execute", { failExecute: true });
    sc = new SidecarProcess({ id: "dash", port: portDash, peers: [`dash-peer=ws://127.0.0.1:${portPeer}`] });
    peer = new SidecarProcess({ id: "dash-peer", port: portPeer, peers: [`dash=ws://127.0.0.1:${portDash}`] });
    await Promise.all([sc.start(), peer.start()]);
    await waitForLinks(sc, ["dash-peer"]);
    const dtx = await connect({ socket: sc.socket });
    const other = await connect({ socket: sc.socket });
    clients.push(dtx, other);
    await dtx.beginDistributed("order-1", async (tx) => {
      await tx.put("orders/1", 1);
      await other.join(tx.context, (t) => t.put("stock/1", 9));
    });
    await dtx.commitDistributed("order-1");
    await dtx.beginDistributed("order-2", (tx) => tx.put("orders/2", 2));
    await dtx.rollbackDistributed("order-2");
    await dtx.beginDistributed("order-3", (tx) => tx.put("orders/3", 3));

    const stuck = await dtx.createTransaction({ name: "stuck-commit", consistency: "immediate" });
    await stuck.addParticipant({ participantId: "holds-commit", endpoint: holdsCommit.endpoint, retryPolicy: { attempts: 1000, backoffMs: 200, maxBackoffMs: 1000, budgetMs: 600_000 } });
    stuck.execute().catch(() => {}); // never finishes while the participant refuses; the sidecar is killed at the end
    await holdsCommit.until(() => holdsCommit.calls.some((c) => c.op === "commit"), 10_000, "the first refused commit");

    const saga = await dtx.createTransaction({ name: "saga-failed", consistency: "eventual" });
    await saga.addParticipant({ participantId: "refuses-compensate", endpoint: refusesCompensate.endpoint, retryPolicy: { attempts: 2, backoffMs: 10, maxBackoffMs: 20, budgetMs: 5_000 } });
    await saga.addParticipant({ participantId: "fails-execute", endpoint: failsExecute.endpoint });
    expect((await saga.execute()).outcome).toBe("failed");

    // A Saga whose first participant is a service registered on the peer sidecar; its second step fails.
    const svc = await connect({ socket: peer.socket });
    clients.push(svc);
    await svc.register("pay", { action: () => null, compensate: () => null });
    const remote = await dtx.createTransaction({ name: "saga-remote", consistency: "eventual" });
    await remote.addParticipant({ participantId: "pay", endpoint: "service:pay@dash-peer" });
    await remote.addParticipant({ participantId: "fails-execute", endpoint: failsExecute.endpoint });
    expect((await remote.execute()).outcome).toBe("compensated");

    browser = await chromium.launch({
      executablePath,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    });
  });
  afterAll(async () => {
    await browser?.close();
    for (const c of clients) c.close();
    for (const p of [holdsCommit, refusesCompensate, failsExecute]) p?.stop();
    await Promise.all([sc?.cleanup(), peer?.cleanup()]);
    rmSync(dir, { recursive: true, force: true });
  });

  test("shows a loading state until the sidecar first answers, then its data", async () => {
    const page = await browser.newPage();
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    await page.route("**/v1/sidecar", async (route) => {
      await held;
      await route.continue();
    });
    await page.goto(`http://127.0.0.1:${sc.port}/`);
    expect(await page.locator("body").getAttribute("data-state")).toBe("loading");
    expect(await page.locator("#status").textContent()).toBe("loading…");
    release();
    await loaded(page);
    expect(await page.locator("#status").textContent()).toStartWith("updated ");
    expect(await page.locator("tr.txn").count()).toBe(6);
    await page.close();
  });

  test("the header names the sidecar by its id", async () => {
    const page = await open();
    await loaded(page);
    expect(await page.locator("#sidecar-id").textContent()).toBe("dash");
    expect(await page.locator("#sidecar-meta").textContent()).toMatch(/^v\d+\.\d+\.\d+ · ready$/);
    expect(await page.title()).toBe("dtx sidecar dash");
    await page.close();
  });

  test("the peer panel lists each peer with its url, state and since", async () => {
    const page = await open();
    await loaded(page);
    const cells = await page.locator('tr.peer[data-id="dash-peer"] td').allTextContents();
    expect(cells[0]).toBe("dash-peer");
    expect(cells[1]).toBe(`ws://127.0.0.1:${portPeer}/v1/federation`);
    expect(cells[2]).toBe("up");
    expect(cells[3]).toMatch(/^\d\d:\d\d:\d\d\.\d{3} \(.+ ago\)$/);
    expect(await page.locator("#no-peers").isHidden()).toBe(true);
    await page.close();
  });

  test("a transaction committing past the threshold is marked stuck; prepared and finished ones are not", async () => {
    const page = await open("/?stuckMs=0");
    await loaded(page);
    expect(await attention(page, "stuck-commit")).toBe("stuck");
    expect(await page.locator('tr.txn[data-name="stuck-commit"] .flag').textContent()).toBe("stuck");
    expect(await page.locator('tr.txn[data-name="stuck-commit"] .in-state').textContent()).toMatch(/^\d+\.\d s$/);
    for (const healthy of ["order-1", "order-2", "order-3"]) expect(await attention(page, healthy)).toBeNull();
    expect(await page.locator("#attention").textContent()).toStartWith("2 need attention");
    await page.close();
  });

  test("a failed transaction is marked as needing an operator whatever the threshold", async () => {
    const page = await open("/?stuckMs=3600000");
    await loaded(page);
    expect(await attention(page, "saga-failed")).toBe("needs operator");
    expect(await attention(page, "stuck-commit")).toBeNull();
    await page.close();
  });

  test("under the default one-minute threshold a transaction committing for seconds is not marked", async () => {
    const page = await open();
    await loaded(page);
    expect(await attention(page, "stuck-commit")).toBeNull();
    await page.close();
  });

  test("a participant on another sidecar is shown with it: in the row and in the timeline", async () => {
    const page = await open();
    await loaded(page);
    expect(await page.locator('tr.txn[data-name="saga-remote"] td').last().textContent()).toBe("2 (on dash-peer)");
    await page.click('tr.txn[data-name="saga-remote"]');
    await page.waitForSelector("#tl-events li");
    expect(await page.locator("#tl-events li").allTextContents()).toContainEqual(expect.stringContaining("pay@dash-peer: execute → ok"));
    await page.close();
  });

  test("filter by state, open a transaction's timeline, save a screenshot", async () => {
    const page = await open("/?stuckMs=0");
    await loaded(page);
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
    await page.selectOption("#state", "");
    await page.waitForFunction('document.querySelectorAll("tr.txn").length === 6');

    const shot = join(process.env.DTX_SCREENSHOT_DIR ?? tmpdir(), "dtx-dashboard.png");
    await page.screenshot({ path: shot, fullPage: true });
    expect(statSync(shot).size).toBeGreaterThan(5_000);
    console.log(`dashboard screenshot: ${shot}`);
    await page.close();
  });

  test("beyond loopback the page asks for the admin token, refuses a wrong one, and loads with the right one", async () => {
    const secretFile = join(dir, "secret");
    const tokenFile = join(dir, "admin-token");
    const token = "dashboard-token-0123456789";
    writeFileSync(secretFile, "dashboard-test-secret\n");
    writeFileSync(tokenFile, `${token}\n`);
    const guarded = await new SidecarProcess({ id: "dash-guarded", secretFile, extraArgs: ["--host", "0.0.0.0", "--admin-token-file", tokenFile] }).start();
    try {
      const page = await open("/", () => guarded);
      await page.waitForSelector('body[data-state="unauthorized"]');
      expect(await page.locator("#status").textContent()).toContain("Authorization: Bearer <token>");
      expect(await page.locator("#auth").isVisible()).toBe(true);

      await page.fill("#token", "not-the-admin-token-at-all");
      await page.click("#auth button");
      await page.waitForFunction('document.body.dataset.state === "unauthorized" && document.getElementById("status").textContent.includes("does not match")');

      await page.fill("#token", token);
      await page.click("#auth button");
      await loaded(page);
      expect(await page.locator("#sidecar-id").textContent()).toBe("dash-guarded");
      expect(await page.locator("#auth").isHidden()).toBe(true);

      await page.reload(); // the token is kept for the tab's session
      await loaded(page);
      expect(await page.locator("#sidecar-id").textContent()).toBe("dash-guarded");
      await page.close();
    } finally {
      await guarded.cleanup();
    }
  });

  // Last: it takes the sidecar away.
  test("when the sidecar goes away the page says it is unreachable and that what it shows is stale", async () => {
    const page = await open();
    await loaded(page);
    await sc.kill9();
    await page.waitForSelector('body[data-state="unreachable"]', { timeout: 10_000 });
    const status = await page.locator("#status").textContent();
    expect(status).toStartWith("sidecar unreachable");
    expect(status).toContain("showing what it answered at");
    expect(await page.locator("#sidecar-meta").textContent()).toEndWith(" · unreachable");
    await page.close();
  });
});
