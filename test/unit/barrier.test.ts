// The sub-transaction barrier's decisions (src/participants/barrier.ts), over
// entries folded from b.op records exactly as the log folds them. The I/O
// around it (service.ts) has its own tests in service-barrier.test.ts.
import { describe, expect, test } from "bun:test";
import { type BarrierEntry, type BarrierLane, arrive, barrierRecord, decide, leave, resultRecord } from "../../src/participants/barrier.ts";
import { type BarrierOp, type BarrierSummary, type StepOp, foldOrchestration } from "../../src/wal/orchestration-records.ts";

const key = "t/vault";

/** The entry a log holding these records gives (wal.barrierEntry). */
function entry(...ops: Array<[StepOp, BarrierOp]>): BarrierEntry {
  let e: BarrierSummary | undefined;
  for (const [op, b] of ops) e = foldOrchestration(e, barrierRecord(key, op, b, 1)) as BarrierSummary;
  return e;
}

const at = (op: StepOp, e: BarrierEntry) => decide(e, { op, participantId: "vault" });

describe("the barrier's decision for an operation whose turn has come", () => {
  test("a first action or prepare goes ahead, marked sent before the call", () => {
    expect(at("execute", undefined)).toEqual({ k: "call", record: { outcome: "sent" } });
    expect(at("prepare", undefined)).toEqual({ k: "call", record: { outcome: "sent" } });
  });

  test("a commit goes ahead without a sent mark", () => {
    expect(at("commit", entry(["prepare", { outcome: "ok", result: null }]))).toEqual({ k: "call" });
  });

  test("a repeat of a finished operation gets its recorded result without a call", () => {
    expect(at("execute", entry(["execute", { outcome: "ok", result: { id: 4 } }]))).toEqual({ k: "answer", answer: { outcome: "ok", result: { id: 4 } } });
    expect(at("prepare", entry(["prepare", { outcome: "failed", error: "insufficient funds" }]))).toEqual({ k: "answer", answer: { outcome: "fail", error: "insufficient funds" } });
  });

  test("an action that was only sent goes ahead again: it may not have run", () => {
    expect(at("execute", entry(["execute", { outcome: "sent" }]))).toEqual({ k: "call", record: { outcome: "sent" } });
  });

  test("a compensation before its action records a no-op and answers ok without a call", () => {
    expect(at("compensate", undefined)).toEqual({ k: "answer", record: { outcome: "noop" }, answer: { outcome: "ok", result: null } });
    expect(at("abort", undefined)).toEqual({ k: "answer", record: { outcome: "noop" }, answer: { outcome: "ok", result: null } });
  });

  test("a compensation of an action that failed for good is a no-op", () => {
    expect(at("compensate", entry(["execute", { outcome: "failed", error: "no" }]))).toMatchObject({ k: "answer", record: { outcome: "noop" } });
  });

  test("a compensation of an action that was sent, answered or not, calls the handler", () => {
    expect(at("compensate", entry(["execute", { outcome: "sent" }]))).toEqual({ k: "call" });
    expect(at("abort", entry(["prepare", { outcome: "ok", result: null }]))).toEqual({ k: "call" });
  });

  test("an action after its compensation is refused, and the refusal recorded", () => {
    expect(at("execute", entry(["compensate", { outcome: "noop" }]))).toEqual({
      k: "answer",
      record: { outcome: "refused" },
      answer: { outcome: "fail", error: "refused by the barrier: vault was already compensated" },
    });
    expect(at("prepare", entry(["abort", { outcome: "noop" }]))).toMatchObject({ k: "answer", record: { outcome: "refused" }, answer: { error: "refused by the barrier: vault was already aborted" } });
  });

  test("a repeat of a refused action gets the refusal again", () => {
    expect(at("execute", entry(["compensate", { outcome: "noop" }], ["execute", { outcome: "refused" }]))).toEqual({ k: "answer", answer: { outcome: "fail", error: "refused by the barrier" } });
  });
});

describe("the record a call's outcome leaves", () => {
  test("ok is recorded with its result (null when there is none)", () => {
    expect(resultRecord("execute", { outcome: "ok", result: { id: 1 } })).toEqual({ outcome: "ok", result: { id: 1 } });
    expect(resultRecord("commit", { outcome: "ok" })).toEqual({ outcome: "ok", result: null });
  });

  test("a definitive no is recorded for an action or prepare only", () => {
    expect(resultRecord("prepare", { outcome: "fail", error: "votes abort" })).toEqual({ outcome: "failed", error: "votes abort" });
    expect(resultRecord("abort", { outcome: "fail", error: "bad" })).toBeUndefined();
  });

  test("a retry leaves nothing: the sent mark stands", () => {
    expect(resultRecord("execute", { outcome: "retry", error: "timeout" })).toBeUndefined();
  });
});

describe("the broken rules the simulator must catch", () => {
  test("barrier-forgets-null-compensation answers the no-op without recording it", () => {
    expect(decide(undefined, { op: "compensate", participantId: "vault" }, "barrier-forgets-null-compensation")).toEqual({ k: "answer", answer: { outcome: "ok", result: null } });
  });

  test("barrier-forgets-refusal lets an action after its compensation go ahead", () => {
    expect(decide(entry(["compensate", { outcome: "noop" }]), { op: "execute", participantId: "vault" }, "barrier-forgets-refusal").k).toBe("call");
  });

  test("barrier-out-of-turn starts an undo beside its running do", () => {
    expect(arrive([{ op: "execute", running: true }], "compensate", "barrier-out-of-turn").start).toBe(true);
  });
});

describe("the lane: operations of one key in arrival order", () => {
  test("the first operation starts at once", () => {
    expect(arrive([], "prepare")).toEqual({ lane: [{ op: "prepare", running: true }], join: false, start: true });
  });

  test("an undo that arrives while its do runs waits, and starts when the do leaves", () => {
    const waiting = arrive([{ op: "prepare", running: true }], "abort");
    expect(waiting).toEqual({ lane: [{ op: "prepare", running: true }, { op: "abort", running: false }], join: false, start: false });
    expect(leave(waiting.lane, "prepare")).toEqual({ lane: [{ op: "abort", running: true }], start: "abort" });
  });

  test("a repeat of an operation in the lane joins its run, running or waiting", () => {
    const lane: BarrierLane = [{ op: "execute", running: true }, { op: "compensate", running: false }];
    expect(arrive(lane, "execute")).toEqual({ lane, join: true, start: false });
    expect(arrive(lane, "compensate")).toEqual({ lane, join: true, start: false });
  });

  test("the last operation to leave empties the lane", () => {
    expect(leave([{ op: "commit", running: true }], "commit")).toEqual({ lane: [] });
  });

  test("an operation that never ran cannot leave", () => {
    expect(() => leave([{ op: "execute", running: true }, { op: "compensate", running: false }], "compensate")).toThrow("left without running");
  });
});
