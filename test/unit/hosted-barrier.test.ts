// The sub-transaction barrier in front of a service a sidecar hosts
// (src/txn/hosted.ts over src/participants/barrier.ts), driven through the
// engine the way an orchestrator on another sidecar drives it: o_call peer
// messages in, o_result answers out, the service's handler pushed as "invoke"
// effects the test answers. Duplicated, reordered and late messages included.
import { describe, expect, test } from "bun:test";
import type { CallOutcome } from "../../src/participants/outcome.ts";
import { ServiceCalls } from "../../src/participants/service.ts";
import type { PeerMessage } from "../../src/protocol/messages.ts";
import type { StepOp } from "../../src/wal/orchestration-records.ts";
import { Engines } from "../helpers/engines.ts";

const incarnation = "X.b1.1";
let nextCallId = 0;

/** B hosts service "vault" (on connection 7) for the orchestrator X, which the test plays. */
function world(durable = true): Engines {
  const w = new Engines().add("B", durable ? "durable" : "flushed").addRaw("X");
  w.register("B", "vault");
  return w;
}

/** X asks B to run `op` of participant vault of transaction t; returns the call's id. */
function call(w: Engines, op: StepOp, callId = ++nextCallId, endpoint = "service:vault"): number {
  w.peer("X", "B", { t: "o_call", name: "t", from: "X", incarnation, participantId: "vault", index: 0, boot: "xb", callId, endpoint, op, idempotencyKey: `t/vault/${op}` });
  return callId;
}

/** What B answered X for call `callId`. */
function answer(w: Engines, callId: number): Partial<CallOutcome> | undefined {
  const r = w.to("X", "o_result").filter((m) => m.callId === callId);
  expect(r.length).toBeLessThanOrEqual(1);
  if (!r[0]) return undefined;
  const { outcome, result, error, reached, code } = r[0];
  return Object.fromEntries(Object.entries({ outcome, result, error, reached, code }).filter(([, v]) => v !== undefined));
}

const methods = (w: Engines) => w.invokes.map((i) => i.invoke.method);

describe("the barrier in front of a hosted service's prepare and abort", () => {
  test("an abort that arrives while its prepare's handler runs waits for it, then calls the abort handler once", () => {
    const w = world();
    const prepare = call(w, "prepare");
    const abort = call(w, "abort");
    expect(methods(w)).toEqual(["prepare"]); // the abort waits for the prepare
    w.answer("B", "prepare");
    expect(answer(w, prepare)).toEqual({ outcome: "ok", result: null });
    expect(answer(w, abort)).toBeUndefined();
    w.answer("B", "abort");
    expect(answer(w, abort)).toEqual({ outcome: "ok", result: null });
    expect(methods(w)).toEqual(["prepare", "abort"]);
  });

  test("a prepare that arrives after its abort is refused and never reaches the service", () => {
    const w = world();
    expect(answer(w, call(w, "abort"))).toEqual({ outcome: "ok", result: null });
    expect(answer(w, call(w, "prepare"))).toMatchObject({ outcome: "fail", error: expect.stringContaining("refused by the barrier") });
    expect(methods(w)).toEqual([]);
  });

  test("a prepare the service never answered (it hung up) may have run: its abort calls the abort handler", () => {
    const w = world();
    const prepare = call(w, "prepare");
    w.disconnect("B");
    expect(answer(w, prepare)).toEqual({ outcome: "retry", error: "the service disconnected before it answered" });
    w.register("B", "vault");
    const abort = call(w, "abort");
    w.answer("B", "abort");
    expect(answer(w, abort)).toEqual({ outcome: "ok", result: null });
    expect(methods(w)).toEqual(["prepare", "abort"]);
  });

  test("after a sidecar restart, a prepare that was sent and never answered may have run: its abort calls the abort handler", () => {
    const w = world();
    call(w, "prepare");
    w.restart("B");
    w.register("B", "vault");
    const abort = call(w, "abort");
    w.answer("B", "abort");
    expect(answer(w, abort)).toEqual({ outcome: "ok", result: null });
    expect(methods(w)).toEqual(["prepare", "abort"]);
  });

  test("a prepare for a service not registered there provably never reached it (PARTICIPANT_UNAVAILABLE); its abort is a no-op that needs no service", () => {
    const w = world();
    w.disconnect("B");
    expect(answer(w, call(w, "prepare"))).toMatchObject({ outcome: "retry", reached: false, code: "PARTICIPANT_UNAVAILABLE", error: expect.stringContaining("service vault is not registered on sidecar B") });
    expect(answer(w, call(w, "abort"))).toEqual({ outcome: "ok", result: null });
    expect(methods(w)).toEqual([]);
  });

  test("a prepare that voted no is kept: a duplicate gets the no without calling the handler, and the abort is a no-op", () => {
    const w = world();
    const prepare = call(w, "prepare");
    w.answer("B", "prepare", { outcome: "fail", error: "insufficient funds" });
    expect(answer(w, prepare)).toEqual({ outcome: "fail", error: "insufficient funds" });
    expect(answer(w, call(w, "prepare"))).toEqual({ outcome: "fail", error: "insufficient funds" });
    expect(answer(w, call(w, "abort"))).toEqual({ outcome: "ok", result: null });
    expect(methods(w)).toEqual(["prepare"]);
  });
});

describe("duplicate, reordered and late messages across the link", () => {
  test("a call repeated while the handler runs joins the run: the handler runs once and each call is answered", () => {
    const w = world();
    const first = call(w, "execute");
    const again = call(w, "execute");
    const exact = call(w, "execute", first); // the same message delivered twice
    expect(exact).toBe(first);
    expect(methods(w)).toEqual(["execute"]);
    w.answer("B", "execute", { outcome: "ok", result: { charged: 5 } });
    expect(answer(w, first)).toEqual({ outcome: "ok", result: { charged: 5 } });
    expect(answer(w, again)).toEqual({ outcome: "ok", result: { charged: 5 } });
  });

  test("a call repeated after it finished gets the recorded answer; the handler is not called again", () => {
    const w = world();
    const first = call(w, "execute");
    w.answer("B", "execute", { outcome: "ok", result: 1 });
    expect(answer(w, first)).toEqual({ outcome: "ok", result: 1 });
    expect(answer(w, call(w, "execute"))).toEqual({ outcome: "ok", result: 1 });
    expect(methods(w)).toEqual(["execute"]);
  });

  test("a compensation that overtakes its action is a recorded no-op, and the action that arrives after it is refused", () => {
    const w = world();
    expect(answer(w, call(w, "compensate"))).toEqual({ outcome: "ok", result: null });
    expect(answer(w, call(w, "execute"))).toMatchObject({ outcome: "fail", error: expect.stringContaining("already compensated") });
    expect(methods(w)).toEqual([]);
    expect(w.wal("B").barrierEntry(`t/vault@${incarnation}`)?.ops).toMatchObject({ compensate: { outcome: "noop" }, execute: { outcome: "refused" } });
  });

  test("an action right behind its compensation, in the same turn, is refused although the log shows neither record yet", () => {
    const w = new Engines().add("B", "commit-reads").addRaw("X");
    w.register("B", "vault");
    const compensate = call(w, "compensate");
    const execute = call(w, "execute");
    w.wal("B").flush();
    w.settle();
    expect(answer(w, compensate)).toEqual({ outcome: "ok", result: null });
    expect(answer(w, execute)).toMatchObject({ outcome: "fail", error: expect.stringContaining("already compensated") });
    expect(methods(w)).toEqual([]);
  });

  test("the answer leaves only once the records it rests on are durable", () => {
    const w = world(false);
    const id = call(w, "execute");
    expect(methods(w)).toEqual([]); // the sent mark first
    w.wal("B").flush();
    w.settle();
    expect(methods(w)).toEqual(["execute"]);
    w.answer("B", "execute", { outcome: "ok", result: 2 });
    expect(answer(w, id)).toBeUndefined();
    w.wal("B").flush();
    w.settle();
    expect(answer(w, id)).toEqual({ outcome: "ok", result: 2 });
  });

  test("an o_call whose endpoint names a sidecar is refused by the peer schema, which names the rule", () => {
    const w = world();
    expect(() => w.peer("X", "B", { t: "o_call", name: "t", from: "X", participantId: "vault", index: 0, boot: "xb", callId: 1, endpoint: "service:vault@B", op: "execute", idempotencyKey: "k" } as PeerMessage)).toThrow(
      "endpoint must be service:<name> or store:",
    );
  });
});

describe("the service's connection (ServiceCalls)", () => {
  test("a frame that could not be pushed (the connection just went) never reached the service", async () => {
    const calls = new ServiceCalls({ push: () => false });
    expect(await calls.invoke({ id: 1, conn: 7, service: "vault", method: "prepare", name: "t", participantId: "vault", idempotencyKey: "t/vault/prepare" })).toMatchObject({ outcome: "retry", reached: false });
  });

  test("the service hanging up answers its calls in flight with a retry that may have run", async () => {
    const calls = new ServiceCalls({ push: () => true });
    const pending = calls.invoke({ id: 1, conn: 7, service: "vault", method: "prepare", name: "t", participantId: "vault", idempotencyKey: "t/vault/prepare" });
    calls.disconnected(7);
    const o = await pending;
    expect(o).toMatchObject({ outcome: "retry" });
    expect(o.reached).toBeUndefined();
  });
});
