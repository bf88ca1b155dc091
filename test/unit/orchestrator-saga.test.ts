// Saga steps of the orchestrator, driven through Node.step with no I/O
// (test/helpers/orchestrator-harness.ts).
import { describe, expect, test } from "bun:test";
import type { ParticipantCall } from "../../src/txn/types.ts";
import { Sidecar, calls, exhaust, fast, http, started } from "../helpers/orchestrator-harness.ts";

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

const short = { attempts: 3, backoffMs: 5, maxBackoffMs: 10, budgetMs: 10_000, callTimeoutMs: 50 };
const refused = { outcome: "retry", reached: false, error: "ECONNREFUSED" } as const;
const timedOut = { outcome: "retry", error: "did not answer within 50 ms" } as const;

describe("a Saga whose compensation gives up", () => {
  /** p0 and p1 executed, p2 failed; the compensation of p1 is in flight. */
  function compensatingP1(): { sc: Sidecar; comp1: ParticipantCall } {
    const sc = new Sidecar();
    const [e0] = started(sc, "g", [http("p0"), http("p1", short), http("p2")]);
    const [e1] = calls(sc.answer(e0, "ok"));
    const [e2] = calls(sc.answer(e1, "ok"));
    const [comp1] = calls(sc.answer(e2, "fail"));
    expect(comp1).toMatchObject({ op: "compensate", index: 1 });
    return { sc, comp1 };
  }

  test("the earlier steps are still compensated, newest first, and the Saga ends failed naming the step that gave up", () => {
    const { sc, comp1 } = compensatingP1();
    const [comp0] = exhaust(sc, comp1, timedOut);
    expect(comp0).toMatchObject({ op: "compensate", index: 0 });
    expect(sc.wal.orchestration("g")?.state).toBe("compensating");
    sc.answer(comp0, "ok");
    const s = sc.wal.orchestration("g");
    expect(s?.state).toBe("failed");
    expect(s?.reason).toContain("p1 compensate gave up after 3 attempts");
    expect(sc.steps("g")).toEqual([["execute:ok", "compensate:ok"], ["execute:ok", "compensate:failed"], ["execute:failed"]]);
  });

  test("after a restart, the compensations go on past the one that gave up, which is not called again", () => {
    const { sc, comp1 } = compensatingP1();
    exhaust(sc, comp1, timedOut);
    sc.restart();
    const again = calls(sc.tick(20));
    expect(again.map((c) => `${c.op}:${c.index}`)).toEqual(["compensate:0"]);
    sc.answer(again[0], "ok");
    expect(sc.wal.orchestration("g")?.state).toBe("failed");
  });
});

describe("a Saga step that never reached its participant", () => {
  /** p0 executed; p1's action is in flight. */
  function atP1(policy = short): { sc: Sidecar; e1: ParticipantCall } {
    const sc = new Sidecar();
    const [e0] = started(sc, "u", [http("p0"), http("p1", policy), http("p2")]);
    const [e1] = calls(sc.answer(e0, "ok"));
    expect(e1).toMatchObject({ op: "execute", index: 1 });
    return { sc, e1 };
  }

  test("is not compensated: the earlier steps are, and the Saga ends compensated", () => {
    const { sc, e1 } = atP1();
    const [comp0] = exhaust(sc, e1, refused);
    expect(comp0).toMatchObject({ op: "compensate", index: 0 });
    sc.answer(comp0, "ok");
    expect(sc.wal.orchestration("u")?.state).toBe("compensated");
    expect(sc.wal.orchestration("u")?.reason).toContain("p1 execute never reached the participant in 3 attempts");
    expect(sc.steps("u")).toEqual([["execute:ok", "compensate:ok"], ["execute:unreached"], []]);
  });

  test("one attempt that may have arrived makes it a step that may have applied, and it is compensated", () => {
    const { sc, e1 } = atP1();
    const [retry] = calls(sc.answer(e1, timedOut).concat(sc.tick(20)));
    const [comp1] = exhaust(sc, retry, refused);
    expect(comp1).toMatchObject({ op: "compensate", index: 1 });
    expect(sc.steps("u")?.[1]).toEqual(["execute:maybe"]);
  });

  test("after a restart, the action that was in flight before it may have arrived: refused attempts since do not make it unreached", () => {
    const { sc, e1 } = atP1();
    sc.restart();
    const [again] = calls(sc.tick(20));
    expect(again).toMatchObject({ op: "execute", index: 1, idempotencyKey: e1.idempotencyKey });
    const [comp1] = exhaust(sc, again, refused);
    expect(comp1).toMatchObject({ op: "compensate", index: 1 });
    expect(sc.steps("u")?.[1]).toEqual(["execute:maybe"]);
  });

  test("an abort while the action waits to be retried after refused connections logs it unreached and compensates only the earlier steps", () => {
    const { sc, e1 } = atP1(fast);
    expect(calls(sc.answer(e1, refused))).toEqual([]); // waits for its backoff
    const [comp0] = calls(sc.client({ op: "o_abort", name: "u" }));
    expect(comp0).toMatchObject({ op: "compensate", index: 0 });
    sc.answer(comp0, "ok");
    expect(sc.wal.orchestration("u")?.state).toBe("compensated");
    expect(sc.steps("u")?.[1]).toEqual(["execute:unreached"]);
  });

  test("an abort while a refused action's retry is in flight compensates it too: that call may arrive", () => {
    const { sc, e1 } = atP1(fast);
    const [retry] = calls(sc.answer(e1, refused).concat(sc.tick(20)));
    expect(retry).toMatchObject({ op: "execute", index: 1 });
    const [comp1] = calls(sc.client({ op: "o_abort", name: "u" }));
    expect(comp1).toMatchObject({ op: "compensate", index: 1 });
  });
});

describe("a Saga's timeout", () => {
  test("survives a restart: it times out timeoutMs after execute, not a default later", () => {
    const sc = new Sidecar();
    sc.client({ op: "o_create", name: "slow", requirements: { consistency: "eventual", timeout: 0.5 } });
    sc.client({ op: "o_add", name: "slow", participant: http("p0") });
    const [first] = calls(sc.client({ op: "o_execute", name: "slow" }));
    expect(first).toMatchObject({ op: "execute", index: 0 });
    sc.tick(200);
    sc.restart();
    sc.tick(200);
    expect(sc.wal.orchestration("slow")?.decision).toBeUndefined();
    sc.tick(200); // 600 ms after execute
    expect(sc.wal.orchestration("slow")).toMatchObject({ decision: "compensate", reason: "timed out after 500 ms" });
  });
});
