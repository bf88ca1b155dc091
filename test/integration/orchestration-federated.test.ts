// Orchestrated transactions across three real sidecar processes (issue 21):
// A orchestrates an order; its payment service is registered on B by a
// client of B's own socket (service:payments@B); its stock is C's built-in
// store (store:C); its shipping service is on A. The participant's own sidecar
// logs its branch, runs the barrier and calls its service; A drives it over the
// peer link. kill -9 on real processes; a hand-driven peer only where the test
// is about a peer duplicating and reordering what it sends.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { type CallbackCall, type Client, connect, type ServiceHandlers } from "../../client/index.ts";
import { freePorts, RawPeer, waitForLinks } from "../helpers/federation.ts";
import { SidecarProcess, tempDir, waitFor } from "../helpers/sidecar-process.ts";

const secret = "orchestration-federated-secret";
const dir = tempDir("dtx-ofed-");
const secretFile = join(dir, "secret");
writeFileSync(secretFile, `${secret}\n`);

const ids = ["A", "B", "C"] as const;
const ports = freePorts(3);
const url = (i: number) => `ws://127.0.0.1:${ports[i]}`;
const sc = Object.fromEntries(
  ids.map((id, i) => [id, new SidecarProcess({ id, port: ports[i], secretFile, peers: ids.flatMap((o, k) => (o === id ? [] : [`${o}=${url(k)}`])) })]),
) as Record<(typeof ids)[number], SidecarProcess>;
let a: Client;
let c: Client;
let shipping: Client;
const clients: Client[] = [];

/** The shipping service, on A: its action fails for orders named fails-…. */
const shippingHandlers: ServiceHandlers = {
  action: (call) => {
    if (call.name.startsWith("fails-")) throw new Error("no courier available");
  },
  compensate: () => {},
  prepare: () => {},
  commit: () => {},
  abort: () => {},
};

const fast = { attempts: 200, backoffMs: 20, maxBackoffMs: 200, budgetMs: 30_000, callTimeoutMs: 2_000 };
/** A handful of quick attempts: a participant that is never reached is known to be within about a second. */
const few = { attempts: 4, backoffMs: 20, maxBackoffMs: 100, budgetMs: 10_000, callTimeoutMs: 2_000 };

/**
 * The payment service. Its handlers record every call with its idempotency key: a service applies each key
 * once (README), so a call made twice with one key is applied once, and twice with two keys is a bug.
 */
class Payments {
  readonly runs: { method: string; key: string }[] = [];
  private held?: { method: string; gate: Promise<void> };
  private releaseHeld = () => {};

  get calls(): string[] {
    return this.runs.map((r) => r.method);
  }

  /** Hold the next call of `method` in its handler until release(). */
  hold(method: string) {
    const gate = new Promise<void>((r) => (this.releaseHeld = r));
    this.held = { method, gate };
  }

  release() {
    this.releaseHeld();
  }

  count(method: string): number {
    return this.calls.filter((m) => m === method).length;
  }

  /** The idempotency keys `method` was called with. */
  keys(method: string): string[] {
    return this.runs.filter((r) => r.method === method).map((r) => r.key);
  }

  handlers(): ServiceHandlers {
    const run = (method: string) => async (call: CallbackCall) => {
      this.runs.push({ method, key: call.idempotencyKey });
      const held = this.held;
      if (held?.method === method) {
        this.held = undefined;
        await held.gate;
      }
      return { charged: 10 };
    };
    return { action: run("execute"), compensate: run("compensate"), prepare: run("prepare"), commit: run("commit"), abort: run("abort") };
  }
}

/** A client of B's socket that registers the payment service there; after B restarts it reconnects and registers again by itself. */
async function servePayments(p: Payments): Promise<Client> {
  const svc = await connect({ socket: sc.B.socket });
  clients.push(svc);
  await svc.register("payments", p.handlers());
  return svc;
}

beforeAll(async () => {
  await Promise.all(ids.map((id) => sc[id].start()));
  await Promise.all(ids.map((id) => waitForLinks(sc[id], ids.filter((o) => o !== id))));
  [a, c] = await Promise.all([connect({ socket: sc.A.socket }), connect({ socket: sc.C.socket })]);
  clients.push(a, c);
  shipping = await connect({ socket: sc.A.socket });
  clients.push(shipping);
  await shipping.register("shipping", shippingHandlers);
});

/** kill -9 of A (if it is still running) and its restart: A's client connects again; the shipping service, which calls nothing, registers again by itself. */
async function restartA() {
  await sc.A.kill9();
  await sc.A.start();
  await waitForLinks(sc.A, ["B", "C"]);
  a = await connect({ socket: sc.A.socket });
  clients.push(a);
}

afterAll(async () => {
  for (const cl of clients) cl.close();
  await Promise.all(ids.map((id) => sc[id].cleanup()));
});

/** C's store holds 5 of `key`. */
async function stock(key: string) {
  await c.beginDistributed(`seed-${key.replace("/", "-")}`, (tx) => tx.put(key, 5));
  await c.commitDistributed(`seed-${key.replace("/", "-")}`);
}

/** The order: pay on B, take the stock from C's store, ship from A. */
async function order(name: string, key: string, requirements: { consistency: "eventual" | "immediate" }) {
  const t = await a.createTransaction({ name, requirements });
  await t.addParticipant({ participantId: "payments", endpoint: "service:payments@B", compensationAction: "refund", retryPolicy: fast });
  await t.addParticipant({ participantId: "stock", endpoint: "store:C", payload: { put: { [key]: 4 } }, retryPolicy: fast });
  await t.addParticipant({ participantId: "shipping", endpoint: "service:shipping", retryPolicy: fast });
  return t;
}

const metrics = async (s: SidecarProcess) => (await fetch(`${s.baseUrl}/metrics`)).text();
/** How many `op`s the sidecar's barrier logged ok for A since it started (dtx_hosted_operations_total). */
async function counter(s: SidecarProcess, op: string): Promise<number> {
  const m = new RegExp(`^dtx_hosted_operations_total\\{op="${op}",orchestrator="A",outcome="ok"\\} (\\d+)$`, "m").exec(await metrics(s));
  return m ? Number(m[1]) : 0;
}

describe("an order Saga on A, its payment on B, its stock in C's store", () => {
  test("the third step fails: B's and C's steps are compensated once each, newest first, and every sidecar answers status for its part", async () => {
    const p = new Payments();
    const svc = await servePayments(p);
    await stock("stock/saga-1");
    const r = await (await order("fails-saga-1", "stock/saga-1", { consistency: "eventual" })).execute();
    expect(r).toMatchObject({ outcome: "compensated", protocol: "saga", reason: expect.stringContaining("no courier available") });
    expect(r.participants.map((x) => [x.participantId, x.sidecar, x.status])).toEqual([
      ["payments", "B", "compensated"],
      ["stock", "C", "compensated"],
      ["shipping", "A", "failed"],
    ]);
    expect(p.calls).toEqual(["execute", "compensate"]);
    expect(p.runs.map((x) => x.key)).toEqual(["fails-saga-1/payments/execute", "fails-saga-1/payments/compensate"]);
    expect(await c.get("stock/saga-1")).toBe(5);

    const onB = await svc.status("fails-saga-1");
    expect(onB).toMatchObject({ coordinator: "A", kind: "orchestrated", participants: [{ participantId: "payments", sidecar: "B", status: "compensated" }] });
    const onC = await c.status("fails-saga-1");
    expect(onC).toMatchObject({ coordinator: "A", state: "compensated", participants: [{ participantId: "stock", endpoint: "store:", status: "compensated" }] });
    expect((onC.participants[0] as { steps: { op: string }[] }).steps.map((s) => s.op)).toEqual(["execute", "compensate"]);
    const cli = Bun.spawnSync([process.execPath, "sidecar/cli.ts", "status", "fails-saga-1", "--socket", sc.A.socket]);
    expect(cli.stdout.toString()).toMatch(/payments\s+service:payments@B on B\s+compensated/);
    expect(await metrics(sc.A)).toMatch(/^dtx_participant_results_total\{op="compensate",outcome="ok",sidecar="B"\} [1-9]/m);
    expect(await metrics(sc.C)).toMatch(/^dtx_hosted_operations_total\{op="compensate",orchestrator="A",outcome="ok"\} [1-9]/m);
    svc.close();
  });

  test("B killed -9 mid-compensation: after it restarts (the service calls nothing; its client registers again by itself), each compensation is applied exactly once", async () => {
    const p = new Payments();
    const svc = await servePayments(p);
    await stock("stock/saga-2");
    p.hold("compensate");
    const compensatedOnC = await counter(sc.C, "compensate");
    const result = (await order("fails-saga-2", "stock/saga-2", { consistency: "eventual" })).execute();
    await waitFor(() => p.count("compensate") === 1, 15_000, "the payment's compensation to reach its handler");
    expect(await c.get("stock/saga-2")).toBe(5); // C's step, newer, was compensated first
    await sc.B.kill9();
    await sc.B.start();
    await waitForLinks(sc.B, ["A", "C"]);
    await waitFor(() => p.count("compensate") === 2, 15_000, "the compensation to be called again after the restart");
    p.release(); // the first call answers a sidecar that is gone; the service applies its key once either way
    expect((await result).outcome).toBe("compensated");
    // Called twice (B died while its handler ran), with one key: the service applies it once.
    expect(p.keys("compensate")).toEqual(["fails-saga-2/payments/compensate", "fails-saga-2/payments/compensate"]);
    expect(p.count("execute")).toBe(1);
    // Each barrier logged one compensation: B's since its restart (the first call was never answered), C's once.
    expect(await counter(sc.B, "compensate")).toBe(1);
    expect(await counter(sc.C, "compensate")).toBe(compensatedOnC + 1);
    expect(await c.get("stock/saga-2")).toBe(5);
    const onC = await c.status("fails-saga-2");
    expect((onC.participants[0] as { steps: { op: string; outcome: string }[] }).steps).toMatchObject([
      { op: "execute", outcome: "ok" },
      { op: "compensate", outcome: "ok" },
    ]);
    expect((await svc.status("fails-saga-2")).participants).toMatchObject([{ participantId: "payments", status: "compensated" }]);
    svc.close();
  }, 60_000);
});

describe("the orchestrator killed -9", () => {
  test("mid-compensation: it resumes from its log, and B's barrier answers the repeated call from the run still in flight", async () => {
    const p = new Payments();
    const svc = await servePayments(p);
    await stock("stock/saga-3");
    p.hold("compensate");
    void (await order("fails-saga-3", "stock/saga-3", { consistency: "eventual" })).execute().catch(() => {});
    await waitFor(() => p.count("compensate") === 1, 15_000, "the payment's compensation to reach its handler");
    await restartA();
    p.release();
    await waitFor(async () => (await a.status("fails-saga-3")).state === "compensated", 15_000, "the Saga compensated after A's restart");
    expect(p.count("compensate")).toBe(1); // the restarted orchestrator's call joined the run in flight, or got its record
    expect(p.count("execute")).toBe(1);
    expect(await c.get("stock/saga-3")).toBe(5);
    svc.close();
  }, 60_000);

  test("mid-prepare: C's prepared store branch waits in doubt, and every branch commits once A is back", async () => {
    const p = new Payments();
    const svc = await servePayments(p);
    await stock("stock/tcc-2");
    p.hold("prepare");
    void (await order("tcc-2", "stock/tcc-2", { consistency: "immediate" })).execute().catch(() => {});
    await waitFor(() => p.count("prepare") === 1, 15_000, "the payment's prepare to reach its handler");
    await waitFor(async () => (await c.status("tcc-2")).state === "prepared", 15_000, "C's store prepared");
    await sc.A.kill9();
    // C holds its write set locked and asks the orchestrator, which is gone: it never decides alone.
    await c.beginDistributed("rival-tcc-2", (tx) => tx.put("stock/tcc-2", 1)).then(
      () => expect.unreachable("a write to a key C's prepared branch holds must conflict"),
      (e) => expect(e.code).toBe("TRANSACTION_CONFLICT"),
    );
    expect(await c.get("stock/tcc-2")).toBe(5);
    await restartA();
    p.release();
    await waitFor(async () => (await a.status("tcc-2")).state === "committed", 20_000, "tcc-2 committed after A's restart");
    await waitFor(async () => (await c.status("tcc-2")).state === "committed", 10_000, "C's branch committed");
    expect(await c.get("stock/tcc-2")).toBe(4);
    expect(p.count("prepare")).toBe(1);
    expect(p.count("commit")).toBe(1);
    svc.close();
  }, 60_000);
});

describe("the same order as TCC under immediate consistency", () => {
  test("every branch prepares, then commits: B's service once each, C's store writes its prepared write set", async () => {
    const p = new Payments();
    const svc = await servePayments(p);
    await stock("stock/tcc-1");
    const r = await (await order("tcc-1", "stock/tcc-1", { consistency: "immediate" })).execute();
    expect(r).toMatchObject({ outcome: "committed", protocol: "2pc" });
    expect(r.participants.map((x) => x.status)).toEqual(["committed", "committed", "committed"]);
    expect(p.calls).toEqual(["prepare", "commit"]);
    expect(await c.get("stock/tcc-1")).toBe(4);
    expect(await c.status("tcc-1")).toMatchObject({ state: "committed", protocol: "2pc", coordinator: "A" });
    // The prepared write set's locks went with the commit: C's own transactions write the key again.
    await c.beginDistributed("after-tcc-1", (tx) => tx.put("stock/tcc-1", 3));
    expect((await c.commitDistributed("after-tcc-1")).outcome).toBe("committed");
    svc.close();
  });
});

describe("participants that cannot be reached fail fast, with PARTICIPANT_UNAVAILABLE", () => {
  test("an endpoint that does not name a service and a sidecar id properly is BAD_REQUEST naming the field", async () => {
    const t = await a.createTransaction({ name: "bad-endpoints" });
    for (const endpoint of ["service:payments@", "service:@B", "store:not an id", "store:B@C"]) {
      const err = await t.addParticipant({ participantId: "p", endpoint }).catch((e) => e);
      expect({ endpoint, code: err.code, message: err.message }).toMatchObject({ endpoint, code: "BAD_REQUEST", message: expect.stringContaining("service:<name>[@<sidecar-id>] or store:[<sidecar-id>]") });
    }
    await t.abort();
  });

  for (const [what, endpoint, says] of [
    ["a sidecar id that is not a peer", "service:payments@Z", "sidecar Z is not a --peer of A"],
    ["a service not registered on its sidecar", "service:nobody@B", "service nobody is not registered on sidecar B"],
  ] as const) {
    test(`${what}: the step is never reached, the earlier step is compensated, within a bound`, async () => {
      const name = `unreached-${endpoint.replace(/[^A-Za-z0-9]/g, "-")}`;
      await stock(`stock/${name}`);
      const t = await a.createTransaction({ name, requirements: { consistency: "eventual" } });
      await t.addParticipant({ participantId: "stock", endpoint: "store:C", payload: { put: { [`stock/${name}`]: 4 } }, retryPolicy: few });
      await t.addParticipant({ participantId: "gone", endpoint, retryPolicy: few });
      const started = Date.now();
      const r = await t.execute();
      expect(Date.now() - started).toBeLessThan(5_000);
      expect(r.outcome).toBe("compensated");
      expect(r.participants[1]).toMatchObject({ status: "not_reached", code: "PARTICIPANT_UNAVAILABLE", error: expect.stringContaining(says) });
      expect(await c.get(`stock/${name}`)).toBe(5);
    });
  }
});

describe("a peer that duplicates and reorders what it sends", () => {
  test("an operation delivered twice runs once, and an action that arrives after its compensation is refused", async () => {
    const p = new Payments();
    const svc = await servePayments(p);
    const raw = await RawPeer.open(sc.B.port);
    await raw.authenticate("X", secret);
    await raw.next("welcome");
    const call = (op: string, callId: number, participantId = "payments") => ({
      t: "o_call",
      name: "dup-1",
      from: "X",
      incarnation: "X.r1.1",
      participantId,
      index: 0,
      boot: "r1",
      callId,
      endpoint: "service:payments",
      op,
      idempotencyKey: `dup-1/${participantId}/${op}`,
    });
    raw.send(call("execute", 1));
    raw.send(call("execute", 1));
    raw.send({ t: "batch", msgs: [call("execute", 2), call("execute", 2)] });
    const results = () => raw.received.filter((m) => m.t === "o_result") as { callId: number; op: string; outcome: string; participantId: string; error?: string }[];
    await waitFor(() => new Set(results().map((m) => m.callId)).size === 2, 10_000, "both calls answered");
    expect(p.count("execute")).toBe(1);
    expect(results().map((m) => m.outcome)).toEqual(results().map(() => "ok"));
    // Reordered: the compensation of another participant overtakes its action.
    raw.send(call("compensate", 3, "refunds"));
    raw.send(call("execute", 4, "refunds"));
    await waitFor(() => results().some((m) => m.callId === 4), 10_000, "the late action answered");
    expect(results().find((m) => m.callId === 3)).toMatchObject({ outcome: "ok" });
    expect(results().find((m) => m.callId === 4)).toMatchObject({ outcome: "fail", error: expect.stringContaining("already compensated") });
    expect(p.calls).toEqual(["execute"]);
    raw.ws.close();
    svc.close();
  });
});
