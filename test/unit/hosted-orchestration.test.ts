// Orchestrated transactions whose participants live on other sidecars, through
// the engines of three sidecars (test/helpers/engines.ts): A orchestrates, B
// hosts the service "payments", C's store takes part. What each sidecar logs,
// what the services are called with, and what recovery does.
import { describe, expect, test } from "bun:test";
import type { ParticipantSpec } from "../../src/protocol/orchestration.ts";
import { Engines } from "../helpers/engines.ts";

const fast = { attempts: 5, backoffMs: 5, maxBackoffMs: 10, budgetMs: 10_000, callTimeoutMs: 200 };

function world(): Engines {
  const w = new Engines().add("A").add("B").add("C");
  w.register("B", "payments");
  return w;
}

const payments: ParticipantSpec = { participantId: "payments", endpoint: "service:payments@B", supports2pc: true, supportsSaga: true, compensationAction: "refund", retryPolicy: fast };
const stock: ParticipantSpec = { participantId: "stock", endpoint: "store:C", supports2pc: true, supportsSaga: true, payload: { put: { "stock/A": 4 } }, retryPolicy: fast };
/** A third step whose service on A refuses its action for good. */
const shipping: ParticipantSpec = { participantId: "shipping", endpoint: "service:shipping", supports2pc: true, supportsSaga: true, retryPolicy: fast };

function start(w: Engines, name: string, specs: ParticipantSpec[], consistency: "eventual" | "immediate" = "eventual") {
  expect(w.client("A", { op: "o_create", name, consistency })).toMatchObject({ ok: true });
  for (const participant of specs) expect(w.client("A", { op: "o_add", name, participant })).toMatchObject({ ok: true });
  return () => w.client("A", { op: "o_execute", name });
}

/** C's store holds 5 of stock/A, committed by a transaction of its own. */
function seedStock(w: Engines) {
  w.client("C", { op: "prepare", name: "seed", writes: [["stock/A", 5, false]], begin: { elapsedMs: 0 } });
  expect(w.client("C", { op: "commit", name: "seed" })).toMatchObject({ ok: true, outcome: "committed" });
}

/** Tick A's retries along (20 ms at a time, at most 2 s) until `name` is in `state`; returns its status. */
function until(w: Engines, name: string, state: string) {
  for (let k = 0; k < 100 && status(w, "A", name).state !== state; k++) w.tick(20);
  return status(w, "A", name);
}

const status = (w: Engines, id: string, name: string) => w.client(id, { op: "status", name }) as unknown as { state: string; participants: Record<string, unknown>[] };

describe("a Saga across three sidecars", () => {
  test("the third step fails: C's store step and B's payment are compensated once each, newest first", () => {
    const w = world();
    w.register("A", "shipping", 8);
    seedStock(w);
    const execute = start(w, "order-1", [payments, stock, shipping]);
    execute();
    w.answer("B", "execute", { outcome: "ok", result: { charged: 10 } });
    expect(w.wal("C").kvGet("stock/A")?.value).toBe(4);
    w.answer("A", "execute", { outcome: "fail", error: "no courier" });
    expect(w.wal("C").kvGet("stock/A")?.value).toBe(5); // compensated from its before-image, before the payment
    w.answer("B", "compensate");
    const r = w.client("A", { op: "o_execute", name: "order-1" });
    expect(r).toMatchObject({ ok: true, outcome: "compensated", reason: expect.stringContaining("no courier") });
    expect(w.invokes.map((i) => `${i.node}:${i.invoke.method}`)).toEqual(["B:execute", "A:execute", "B:compensate"]);
    expect(w.pending("B", "compensate")).toEqual([]);
    expect(w.invokes[2].invoke).toMatchObject({ idempotencyKey: "order-1/payments/compensate", action: "refund" });
    expect(w.steps("A", "order-1")).toEqual([["execute:ok", "compensate:ok"], ["execute:ok", "compensate:ok"], ["execute:failed"]]);
  });

  test("the orchestrator names each participant's sidecar; the participants' sidecars answer status for what they hold, from their log", () => {
    const w = world();
    start(w, "order-2", [payments, stock])();
    w.answer("B", "execute");
    expect(status(w, "A", "order-2").participants.map((p) => [p.participantId, p.sidecar, p.status])).toEqual([
      ["payments", "B", "executed"],
      ["stock", "C", "executed"],
    ]);
    expect(status(w, "B", "order-2")).toMatchObject({ state: "committed", protocol: "saga", coordinator: "A", participants: [{ participantId: "payments", sidecar: "B", status: "executed" }] });
    expect(status(w, "C", "order-2")).toMatchObject({ coordinator: "A", participants: [{ participantId: "stock", sidecar: "C", endpoint: "store:", status: "executed" }] });
  });

  test("a step on a sidecar that is not a peer is never reached (PARTICIPANT_UNAVAILABLE): the earlier step is compensated, the Saga ends compensated", () => {
    const w = world();
    start(w, "order-3", [stock, { ...payments, endpoint: "service:payments@Z" }])();
    const r = until(w, "order-3", "compensated");
    expect(r).toMatchObject({ state: "compensated", error: expect.stringContaining("sidecar Z is not a --peer of A") });
    expect(r.participants).toMatchObject([
      { participantId: "stock", status: "compensated" },
      { participantId: "payments", status: "not_reached", code: "PARTICIPANT_UNAVAILABLE", sidecar: "Z" },
    ]);
  });

  test("a step whose service is not registered on its sidecar is never reached, with PARTICIPANT_UNAVAILABLE", () => {
    const w = world();
    start(w, "order-4", [{ ...payments, endpoint: "service:nobody@B" }])();
    expect(until(w, "order-4", "compensated")).toMatchObject({
      participants: [{ status: "not_reached", code: "PARTICIPANT_UNAVAILABLE", error: expect.stringContaining("service nobody is not registered on sidecar B") }],
    });
    expect(w.invokes).toEqual([]);
  });

  test("a late answer, to a call the orchestrator gave up on, is ignored; the retry's answer counts", () => {
    const w = world();
    start(w, "order-5", [payments])();
    w.hold = true;
    w.tick(fast.callTimeoutMs); // the call times out at A; its retry goes after the backoff
    w.tick(fast.maxBackoffMs);
    w.hold = false;
    w.settle(); // the retry joins the run still in flight at B
    expect(w.pending("B", "execute").length).toBe(1);
    w.answer("B", "execute", { outcome: "ok", result: "once" });
    expect(w.client("A", { op: "o_execute", name: "order-5" })).toMatchObject({ outcome: "committed", participants: [{ result: "once" }] });
    expect(w.steps("A", "order-5")).toEqual([["execute:ok"]]);
  });

  test("a restarted orchestrator resumes; the participant's sidecar answers the repeated call from its record", () => {
    const w = world();
    start(w, "order-6", [payments, stock])();
    w.hold = true;
    w.answer("B", "execute", { outcome: "ok", result: 7 }); // B's answer is still on the way when A dies
    w.net.length = 0;
    w.hold = false;
    w.restart("A");
    w.tick(20);
    expect(w.client("A", { op: "status", name: "order-6" })).toMatchObject({ state: "committed" });
    expect(w.invokes.map((i) => i.invoke.method)).toEqual(["execute"]);
    expect(w.steps("A", "order-6")).toEqual([["execute:ok"], ["execute:ok"]]);
  });
});

describe("TCC across three sidecars", () => {
  test("immediate consistency: B's service and C's store prepare, then commit on every branch", () => {
    const w = world();
    seedStock(w);
    const execute = start(w, "tcc-1", [payments, stock], "immediate");
    execute();
    expect(w.wal("C").kvGet("stock/A")?.value).toBe(5); // prepared, not written
    w.answer("B", "prepare");
    w.answer("B", "commit");
    expect(w.client("A", { op: "o_execute", name: "tcc-1" })).toMatchObject({ outcome: "committed", protocol: "2pc" });
    expect(w.wal("C").kvGet("stock/A")?.value).toBe(4);
    expect(w.invokes.map((i) => i.invoke.method)).toEqual(["prepare", "commit"]);
    expect(status(w, "C", "tcc-1")).toMatchObject({ state: "committed", protocol: "2pc", participants: [{ status: "committed" }] });
  });

  test("a store's prepared write set holds its keys: a transaction on C that writes one votes no until the commit is durable", () => {
    const w = world();
    start(w, "tcc-2", [payments, stock], "immediate")();
    expect(w.client("C", { op: "prepare", name: "rival", writes: [["stock/A", 99, false]], begin: { elapsedMs: 0 } })).toMatchObject({ ok: false, error: { code: "TRANSACTION_CONFLICT" } });
    w.answer("B", "prepare");
    w.answer("B", "commit");
    expect(w.client("C", { op: "prepare", name: "rival-2", writes: [["stock/A", 3, false]], begin: { elapsedMs: 0 } })).toMatchObject({ ok: true, state: "prepared" });
  });

  test("a store step's keys are held until its record is durable: a transaction on C that writes one meanwhile votes no", () => {
    const w = new Engines().add("C", "flushed").addRaw("X");
    w.peer("X", "C", { t: "o_call", name: "saga-9", from: "X", incarnation: "X.b1.2", participantId: "stock", index: 0, boot: "xb", callId: 1, endpoint: "store:", op: "execute", idempotencyKey: "saga-9/stock/execute", payload: { put: { "stock/A": 1 } } });
    w.client("C", { op: "prepare", name: "rival", writes: [["stock/A", 2, false]], begin: { elapsedMs: 0 } });
    w.wal("C").flush();
    w.settle();
    expect(w.to("X", "o_result")).toMatchObject([{ callId: 1, outcome: "ok" }]);
    expect(w.client("C", { op: "status", name: "rival" })).toMatchObject({ state: "rolled_back" });
    w.client("C", { op: "prepare", name: "rival-2", writes: [["stock/A", 3, false]], begin: { elapsedMs: 0 } });
    w.wal("C").flush();
    w.settle();
    expect(w.client("C", { op: "status", name: "rival-2" })).toMatchObject({ state: "prepared" });
  });

  test("a participant's sidecar that prepared and never heard the decision asks; an orchestrator with no record of it answers rollback", () => {
    const w = world();
    w.addRaw("X");
    w.peer("X", "C", { t: "o_call", name: "lost", from: "X", incarnation: "X.b1.9", participantId: "stock", index: 0, boot: "xb", callId: 1, endpoint: "store:", op: "prepare", idempotencyKey: "lost/stock/prepare", payload: { put: { "stock/A": 1 } } });
    expect(w.node("C").inDoubtBranches()).toBe(1);
    w.restart("C"); // it recovers the prepare and its locks
    w.tick(20);
    expect(w.to("X", "o_query")).toMatchObject([{ name: "lost", participantId: "stock", incarnation: "X.b1.9" }]);
    expect(w.client("C", { op: "begin", name: "lost" })).toMatchObject({ ok: false, error: { code: "NAME_IN_USE" } });
    w.peer("X", "C", { t: "o_decision", name: "lost", from: "X", incarnation: "X.b1.9", participantId: "stock", index: 0, outcome: "rollback" });
    expect(w.node("C").inDoubtBranches()).toBe(0);
    expect(w.wal("C").kvGet("stock/A")).toBeUndefined();
    expect(w.client("C", { op: "prepare", name: "after", writes: [["stock/A", 2, false]], begin: { elapsedMs: 0 } })).toMatchObject({ ok: true });
  });

  test("presumed abort at the orchestrator: a query about an execution it has no record of is answered rollback", () => {
    const w = world();
    w.addRaw("X");
    w.peer("X", "A", { t: "o_query", name: "never", from: "X", incarnation: "A.b1.77", participantId: "p", index: 0 });
    expect(w.to("X", "o_decision")).toMatchObject([{ name: "never", outcome: "rollback", from: "A" }]);
  });

  test("a restarted participant's sidecar asks, and the orchestrator's commit decision is applied once", () => {
    const w = world();
    start(w, "tcc-3", [payments, stock], "immediate")();
    w.hold = true;
    w.answer("B", "prepare");
    w.deliver(w.net.findIndex((m) => m.msg.t === "o_result")); // B's yes: A decides commit
    w.net.splice(w.net.findIndex((m) => m.to === "C"), 1); // C's commit is lost
    w.hold = false;
    w.settle();
    w.restart("C");
    w.tick(1); // C asks A at its first tick; A's own retry goes too, once its call timed out
    w.answer("B", "commit");
    expect(until(w, "tcc-3", "committed").participants.map((p) => p.status)).toEqual(["committed", "committed"]);
    expect(w.delivered.filter((m) => m.to === "C" && m.msg.t === "o_decision")).toMatchObject([{ msg: { outcome: "commit", payload: { put: { "stock/A": 4 } } } }]);
    expect(w.wal("C").kvGet("stock/A")?.value).toBe(4);
    expect(w.node("C").inDoubtBranches()).toBe(0);
  });
});

describe("a service on the orchestrating sidecar itself", () => {
  test("its barrier records share the log syncs of the orchestrator's: one durable append per step, and the Saga commits", () => {
    const w = new Engines().add("A", "flushed");
    w.register("A", "svc");
    const flushes = () => {
      w.wal("A").flush();
      w.settle();
    };
    start(w, "local-1", [{ ...payments, endpoint: "service:svc" }, { ...payments, participantId: "p2", endpoint: "service:svc" }])();
    let syncs = 0;
    const durableState = () => (w.wal("A").durableSummaries().get("o/local-1") as { state?: string } | undefined)?.state;
    for (let k = 0; k < 10 && durableState() !== "committed"; k++) {
      flushes();
      syncs++;
      for (const i of w.pending("A")) i.answer({ outcome: "ok", result: null });
      w.settle();
    }
    expect(w.invokes.map((i) => i.invoke.method)).toEqual(["execute", "execute"]);
    expect(syncs).toBe(3); // o.begin + the first sent mark; the first result + its o.step + the next sent mark; the last result + o.step + o.end
  });
});
