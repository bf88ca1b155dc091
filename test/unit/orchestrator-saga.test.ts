// Saga steps of the orchestrator, driven through Node.step with no I/O: the
// harness appends persist effects to a MemoryWal (durable at once) and answers
// the "call" effects by hand.
import { describe, expect, test } from "bun:test";
import type { ParticipantSpec } from "../../src/protocol/orchestration.ts";
import { Node } from "../../src/txn/node.ts";
import type { ClientInput, Effect, ParticipantCall } from "../../src/txn/types.ts";
import { MemoryWal } from "../../src/wal/memory-wal.ts";
import type { Request } from "../sim/simulator.ts";

class Sidecar {
  node: Node;
  now = 1_000;
  private reqId = 0;
  private boots = 1;

  constructor(readonly wal = new MemoryWal(true)) {
    this.node = new Node({ id: "A", bootId: "b1", reader: wal });
  }

  step(input: Parameters<Node["step"]>[0]): Effect[] {
    const effects = this.node.step(input);
    const records = effects.flatMap((e) => (e.k === "persist" ? [e.rec] : []));
    if (records.length) this.wal.appendSync(records);
    return effects;
  }

  client(req: Request): Effect[] {
    return this.step({ k: "client", from: { conn: 1, id: ++this.reqId }, req: { ...req, id: this.reqId } as ClientInput, now: this.now });
  }

  answer(c: ParticipantCall, outcome: "ok" | "fail" | "retry"): Effect[] {
    return this.step({ k: "call_result", name: c.name, index: c.index, callId: c.callId, outcome, now: this.now });
  }

  tick(ms: number): Effect[] {
    this.now += ms;
    return this.step({ k: "tick", now: this.now });
  }

  restart(): Effect[] {
    this.node = new Node({ id: "A", bootId: `b${++this.boots}`, reader: this.wal });
    return this.step({ k: "recover", ...this.wal.unfinished(), now: this.now });
  }
}

const calls = (effects: Effect[]) => effects.flatMap((e) => (e.k === "call" ? [e.call] : []));
const fast = { attempts: 50, backoffMs: 5, maxBackoffMs: 10, budgetMs: 10_000, callTimeoutMs: 50 };
const http = (id: string): ParticipantSpec => ({ participantId: id, endpoint: `http://p/${id}`, supports2pc: false, supportsSaga: true, retryPolicy: fast });

/** A Saga over participants p0, p1, p2 whose first step has executed; step 1's action is in flight. */
function sagaWithStepInFlight(): { sc: Sidecar; inflight: ParticipantCall } {
  const sc = new Sidecar();
  sc.client({ op: "o_create", name: "s", consistency: "eventual" });
  for (const id of ["p0", "p1", "p2"]) sc.client({ op: "o_add", name: "s", participant: http(id) });
  const [first] = calls(sc.client({ op: "o_execute", name: "s" }));
  expect(first).toMatchObject({ op: "execute", index: 0 });
  const [second] = calls(sc.answer(first, "ok"));
  expect(second).toMatchObject({ op: "execute", index: 1 });
  return { sc, inflight: second };
}

describe("Saga compensation of the step in flight when the Saga is aborted", () => {
  test("the compensation of the in-flight step finishes before the earlier steps are compensated", () => {
    const { sc } = sagaWithStepInFlight();
    const [comp1] = calls(sc.client({ op: "o_abort", name: "s" }));
    expect(comp1).toMatchObject({ op: "compensate", index: 1 });
    // Ticks while that compensation is outstanding, or waits to be retried, must not skip it.
    expect(calls(sc.tick(20))).toEqual([]);
    const [retry] = calls(sc.answer(comp1, "retry").concat(sc.tick(20)));
    expect(retry).toMatchObject({ op: "compensate", index: 1 });
    const [comp0] = calls(sc.answer(retry, "ok"));
    expect(comp0).toMatchObject({ op: "compensate", index: 0 });
    sc.answer(comp0, "ok");
    expect(sc.wal.orchestration("s")?.state).toBe("compensated");
    expect(sc.wal.orchestration("s")?.done.map((d) => d.map((x) => `${x.op}:${x.outcome}`))).toEqual([["execute:ok", "compensate:ok"], ["compensate:ok"], []]);
  });

  test("after a restart, the step whose action was in flight at the decision is compensated, with the same key", () => {
    const { sc } = sagaWithStepInFlight();
    const [comp1] = calls(sc.client({ op: "o_abort", name: "s" }));
    sc.restart();
    const [again] = calls(sc.tick(20));
    expect(again).toMatchObject({ op: "compensate", index: 1, idempotencyKey: comp1.idempotencyKey });
    const [comp0] = calls(sc.answer(again, "ok"));
    expect(comp0).toMatchObject({ op: "compensate", index: 0 });
  });

  test("a step that failed for good is not compensated, and the steps after it are not called", () => {
    const { sc, inflight } = sagaWithStepInFlight();
    const [comp0] = calls(sc.answer(inflight, "fail"));
    expect(comp0).toMatchObject({ op: "compensate", index: 0 });
    sc.answer(comp0, "ok");
    expect(sc.wal.orchestration("s")?.state).toBe("compensated");
  });

  test("a duplicated or stale result is ignored", () => {
    const { sc, inflight } = sagaWithStepInFlight();
    const [third] = calls(sc.answer(inflight, "ok"));
    expect(third).toMatchObject({ op: "execute", index: 2 });
    expect(sc.answer(inflight, "ok")).toEqual([]);
    expect(sc.answer({ ...third, callId: third.callId + 100 }, "ok")).toEqual([]);
    expect(sc.wal.orchestration("s")?.done[1].length).toBe(1);
  });
});
