// What was decided stays answerable, and every wait has a bound, on real
// federated sidecars: a name is held while anything of its transaction is
// unfinished (in-doubt branches included, across both faces); status answers
// on every sidecar that took part, from the log after a restart; commit and
// rollback answer within ackWaitMs (5 s) with the unreachable listed pending.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { type Client, connect, NameInUseError, NotFoundError, OutcomeUnknownError } from "../../client/index.ts";
import { freePorts, waitForLinks } from "../helpers/federation.ts";
import { SidecarProcess, waitFor } from "../helpers/sidecar-process.ts";

/** How long the engine waits for acks before answering with `pending` (Node's ackWaitMs). */
const ackWaitMs = 5_000;

const [portA, portB] = freePorts(2);
let A: SidecarProcess;
let B: SidecarProcess;
let a: Client;
let b: Client;

beforeAll(async () => {
  A = new SidecarProcess({ id: "A", port: portA, peers: [`B=ws://127.0.0.1:${portB}`] });
  B = new SidecarProcess({ id: "B", port: portB, peers: [`A=ws://127.0.0.1:${portA}`] });
  await Promise.all([A.start(), B.start()]);
  await Promise.all([waitForLinks(A, ["B"]), waitForLinks(B, ["A"])]);
  [a, b] = await Promise.all([connect({ socket: A.socket }), connect({ socket: B.socket })]);
});
afterAll(async () => {
  a?.close();
  b?.close();
  await A?.cleanup();
  await B?.cleanup();
});

/** Begin on A (writing aKey), join on B (writing bKey): prepared on both. */
function prepareAcross(name: string, value: unknown = 1) {
  return a.beginDistributed(name, async (tx) => {
    await tx.put(`${name}/a`, value);
    await b.join(tx.context, (t2) => t2.put(`${name}/b`, value));
  });
}

async function restart(sc: SidecarProcess, how: "kill9" | "sigterm"): Promise<void> {
  if (how === "kill9") await sc.kill9();
  else expect(await sc.sigterm()).toBe(0);
  await sc.start();
  await waitForLinks(sc, [sc === A ? "B" : "A"]);
}

describe("a name is held while anything of its transaction is unfinished", () => {
  test("an in-doubt branch holds its name on its sidecar: begin and createTransaction get NAME_IN_USE there until it is decided", async () => {
    await prepareAcross("held-1");
    expect((await b.status("held-1")).state).toBe("prepared");
    await expect(b.beginDistributed("held-1", (tx) => tx.put("held-1/other", 1))).rejects.toBeInstanceOf(NameInUseError);
    await expect(b.createTransaction({ name: "held-1" })).rejects.toBeInstanceOf(NameInUseError);
    await a.commitDistributed("held-1");
    // Decided and acknowledged: the name is free on B again.
    await b.beginDistributed("held-1", (tx) => tx.put("held-1/other", 2));
    expect((await b.commitDistributed("held-1")).outcome).toBe("committed");
  });

  test("a join of another transaction whose name this sidecar holds is refused with NAME_IN_USE", async () => {
    await b.beginDistributed("held-2", (tx) => tx.put("held-2/b-own", 1)); // B's own, prepared
    const joined = a.beginDistributed("held-2", async (tx) => {
      await b.join(tx.context, (t2) => t2.put("held-2/b", 1));
    });
    await expect(joined).rejects.toBeInstanceOf(NameInUseError);
    expect((await b.status("held-2")).coordinator).toBe("B");
    await b.rollbackDistributed("held-2");
  });

  test("the two faces share one namespace: a prepared 2PC name refuses createTransaction, a created orchestration refuses beginDistributed", async () => {
    await a.beginDistributed("held-3", (tx) => tx.put("held-3/a", 1));
    await expect(a.createTransaction({ name: "held-3" })).rejects.toBeInstanceOf(NameInUseError);
    await a.rollbackDistributed("held-3");
    const t = await a.createTransaction({ name: "held-4", requirements: { consistency: "eventual" } });
    await expect(a.beginDistributed("held-4", (tx) => tx.put("held-4/a", 1))).rejects.toBeInstanceOf(NameInUseError);
    await t.abort();
  });
});

describe("status answers on every sidecar that took part", () => {
  test("while prepared, a joined branch's sidecar reports its yes vote and timestamps", async () => {
    const before = Date.now();
    await prepareAcross("seen-1");
    const s = await b.status("seen-1");
    expect(s).toMatchObject({ name: "seen-1", state: "prepared", protocol: "2pc", coordinator: "A", participants: [{ sidecar: "B", vote: "yes", acked: false }] });
    expect(s.timestamps.begun).toBeGreaterThanOrEqual(before);
    expect(s.timestamps.prepared).toBeGreaterThanOrEqual(s.timestamps.begun!);
    expect(s.timestamps.finished).toBeNull();
    await a.rollbackDistributed("seen-1");
  });

  test("after commit, the participant sidecar answers from its log, also after kill -9 and a restart", async () => {
    await prepareAcross("seen-2");
    await a.commitDistributed("seen-2");
    await restart(B, "kill9");
    b.close();
    b = await connect({ socket: B.socket });
    const s = await b.status("seen-2");
    expect(s).toMatchObject({ state: "committed", coordinator: "A", participants: [{ sidecar: "B", vote: "yes", acked: true }] });
    expect(s.timestamps.finished).toBeGreaterThanOrEqual(s.timestamps.prepared!);
  });

  test("a branch whose callback threw answers rolled_back with its no vote and the reason, after a restart", async () => {
    const run = a.beginDistributed("seen-3", async (tx) => {
      await tx.put("seen-3/a", 1);
      await b.join(tx.context, () => {
        throw new Error("out of stock");
      });
    });
    await expect(run).rejects.toThrow("out of stock");
    await restart(B, "sigterm"); // drained: everything logged is durable, lazy records included
    b.close();
    b = await connect({ socket: B.socket });
    const s = await b.status("seen-3");
    expect(s).toMatchObject({ state: "rolled_back", coordinator: "A", participants: [{ sidecar: "B", vote: "no", acked: true }] });
    expect(String(s.error)).toContain("out of stock");
    expect((await a.status("seen-3")).state).toBe("rolled_back");
  });

  test("a name reused once its transaction finished: status reports the newest, whichever face ran it", async () => {
    await a.beginDistributed("seen-4", (tx) => tx.put("seen-4/a", 1));
    await a.commitDistributed("seen-4");
    const t = await a.createTransaction({ name: "seen-4", requirements: { consistency: "eventual" } });
    await t.addParticipant({ participantId: "stock", endpoint: "store:", payload: { put: { "seen-4/s": 1 } } });
    expect((await t.execute()).outcome).toBe("committed");
    expect(await a.status("seen-4")).toMatchObject({ protocol: "saga", kind: "orchestrated" });
    await a.beginDistributed("seen-4", (tx) => tx.put("seen-4/a", 2));
    expect(await a.status("seen-4")).toMatchObject({ protocol: "2pc", state: "prepared" });
    await a.rollbackDistributed("seen-4");
  });

  test("a sidecar that took no part says it has no record, and what that means", async () => {
    const e = await b.status("seen-never").catch((x) => x);
    expect(e).toBeInstanceOf(NotFoundError);
    expect(e.message).toContain("has no record");
  });
});

describe("every decision call answers within its bound", () => {
  test("rollbackDistributed with the participant down answers within ackWaitMs listing it pending, and finishes once it is back", async () => {
    await prepareAcross("bound-1");
    await B.kill9();
    const started = performance.now();
    const r = await a.rollbackDistributed("bound-1");
    const took = performance.now() - started;
    expect(r).toEqual({ name: "bound-1", outcome: "rolled_back", protocol: "2pc", pending: ["B"] });
    expect(took).toBeLessThan(ackWaitMs + 2_000);
    expect((await a.status("bound-1")).state).toBe("rolling_back");
    await B.start();
    b.close();
    b = await connect({ socket: B.socket });
    await waitFor(async () => (await a.status("bound-1")).state === "rolled_back", 10_000, "A to hear B's ack");
    expect((await b.status("bound-1")).state).toBe("rolled_back");
    expect(await b.get("bound-1/b")).toBeUndefined();
  });

  test("a commit asked of a participant's sidecar whose coordinator is down rejects with OutcomeUnknownError within its bound", async () => {
    await prepareAcross("bound-3");
    await A.kill9();
    const started = performance.now();
    const e = await b.commitDistributed("bound-3").catch((x) => x);
    expect(e).toBeInstanceOf(OutcomeUnknownError);
    expect(performance.now() - started).toBeLessThan(ackWaitMs + 2_000 + 2_000);
    await A.start();
    await waitForLinks(A, ["B"]);
    a.close();
    a = await connect({ socket: A.socket });
    expect((await a.status("bound-3")).state).toBe("prepared"); // nothing was decided
    expect((await b.commitDistributed("bound-3")).outcome).toBe("committed");
  });

  test("commitDistributed of a transaction a restarted coordinator recovered answers within the bound while its participant is down", async () => {
    await prepareAcross("bound-2", 7);
    await B.kill9();
    await A.kill9();
    await A.start();
    a.close();
    a = await connect({ socket: A.socket });
    expect((await a.status("bound-2")).state).toBe("prepared");
    const started = performance.now();
    const r = await a.commitDistributed("bound-2");
    expect(performance.now() - started).toBeLessThan(ackWaitMs + 2_000);
    expect(r).toEqual({ name: "bound-2", outcome: "committed", protocol: "2pc", pending: ["B"] });
    // Asked again while B is still down: the same decision, bounded the same way.
    expect(await a.commitDistributed("bound-2")).toMatchObject({ outcome: "committed", pending: ["B"] });
    await B.start();
    await waitForLinks(A, ["B"]);
    b.close();
    b = await connect({ socket: B.socket });
    await waitFor(async () => (await b.get("bound-2/b")) === 7, 10_000, "B to apply the commit");
    await waitFor(async () => (await a.status("bound-2")).state === "committed", 10_000, "A to hear B's ack");
    await expect(a.rollbackDistributed("bound-2")).rejects.toMatchObject({ code: "INVALID_STATE" });
  });
});
