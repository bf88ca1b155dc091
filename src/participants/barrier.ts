// The sub-transaction barrier (DESIGN §5.2) as decisions over records: no
// I/O, no clock, no log. The sidecar (service.ts) runs it in front of service
// callbacks and the simulator's participants (test/sim/participants.ts) run the
// same functions; each keeps the b.op records in its own log and carries out
// what the barrier says. For one (transaction, participant) key:
//   - a retried or duplicated operation gets its recorded result;
//   - a compensation (abort) whose action (prepare) never ran, or was refused,
//     records a no-op without calling the participant ("null compensation");
//   - an action (prepare) that arrives after its compensation (abort) is
//     refused, and the refusal recorded ("suspension");
//   - anything else goes ahead: an action or prepare is recorded "sent" before
//     the call (from then on it may have run, so its undo calls the handler),
//     and the call's outcome is recorded once it returns.
// Operations of one key run one at a time in arrival order (its lane), so an
// undo that arrives while its do still runs waits for it; a repeat of an
// operation already in the lane joins that run.
import type { BarrierOp, BarrierSummary, OrchestrationRecord, StepOp } from "../wal/orchestration-records.ts";
import type { CallOutcome } from "./outcome.ts";

/**
 * Deliberately broken rules, for the simulator to prove it catches them (test/sim/broken.test.ts); production
 * never passes one:
 * - barrier-forgets-null-compensation: a compensation (abort) before its action (prepare) answers the no-op but
 *   does not record it, so a late action runs after its compensation;
 * - barrier-forgets-refusal: an action (prepare) after its compensation (abort) goes ahead instead of being refused;
 * - barrier-out-of-turn: an operation does not wait for the ones before it in its lane, so an undo runs beside
 *   its do and finds nothing to undo yet.
 */
export type BarrierBrokenRule = "barrier-forgets-null-compensation" | "barrier-forgets-refusal" | "barrier-out-of-turn";

export const barrierBrokenRules: readonly BarrierBrokenRule[] = ["barrier-forgets-null-compensation", "barrier-forgets-refusal", "barrier-out-of-turn"];

/** What the barrier holds for one key: its summary in the log (wal.barrierEntry), if any. */
export type BarrierEntry = BarrierSummary | undefined;

/** The operation that a compensation (abort) undoes, and the reverse. */
const undoOf: Partial<Record<StepOp, StepOp>> = { execute: "compensate", prepare: "abort" };
const doOf: Partial<Record<StepOp, StepOp>> = { compensate: "execute", abort: "prepare" };

/**
 * The key of a (transaction, participant) at the barrier. With the orchestration's incarnation (every one
 * since they were recorded), a name used again gets a barrier of its own; without, the key older logs use.
 */
export function barrierKeyOf(name: string, participantId: string, incarnation?: string): string {
  return incarnation === undefined ? `${name}/${participantId}` : `${name}/${participantId}@${incarnation}`;
}

/** The idempotency key of operation `op` on a participant: the same for every retry of it, on every sidecar. */
export const idempotencyKeyOf = (name: string, participantId: string, op: StepOp) => `${name}/${participantId}/${op}`;

/**
 * What to do with an operation whose turn has come.
 * - answer: do not call the participant; write `record` first (if any), wait until it is durable, then answer;
 * - call: call the participant; write `record` first (if any: the sent mark) once the call is about to leave,
 *   wait until it is durable, then call, and write `resultRecord(op, outcome)` when it returns.
 */
export type BarrierDecision = { k: "answer"; record?: BarrierOp; answer: CallOutcome } | { k: "call"; record?: BarrierOp };

export function decide(entry: BarrierEntry, call: { op: StepOp; participantId: string }, broken?: BarrierBrokenRule): BarrierDecision {
  const { op } = call;
  const done = entry?.ops[op];
  if (done && done.outcome !== "sent") return { k: "answer", answer: recordedAnswer(done) };
  const undo = undoOf[op];
  if (undo && entry?.ops[undo] && broken !== "barrier-forgets-refusal") {
    const undone = undo === "compensate" ? "compensated" : "aborted";
    return { k: "answer", record: { outcome: "refused" }, answer: { outcome: "fail", error: `refused by the barrier: ${call.participantId} was already ${undone}` } };
  }
  const original = doOf[op];
  const ran = original ? entry?.ops[original]?.outcome : undefined;
  if (original && ran !== "ok" && ran !== "sent") {
    // Null compensation: the action was never sent here, or failed; recorded so that a late action is refused.
    const record: BarrierOp | undefined = broken === "barrier-forgets-null-compensation" ? undefined : { outcome: "noop" };
    return { k: "answer", record, answer: { outcome: "ok", result: null } };
  }
  return { k: "call", record: undo ? { outcome: "sent" } : undefined };
}

/** The record a call's outcome leaves, if any: ok with its result; a definitive no to an action or prepare. */
export function resultRecord(op: StepOp, o: CallOutcome): BarrierOp | undefined {
  if (o.outcome === "ok") return { outcome: "ok", result: o.result ?? null };
  // Kept so that a duplicate gets the same no and its undo is a no-op. A retry leaves the sent mark standing.
  if (o.outcome === "fail" && undoOf[op]) return { outcome: "failed", error: o.error };
  return undefined;
}

/** The b.op log record of `b` for operation `op` of `key`, at time `at` (the caller's clock); `extra`: whose it is, store writes. */
export function barrierRecord(key: string, op: StepOp, b: BarrierOp, at: number, extra: BarrierRecordExtra = {}): Extract<OrchestrationRecord, { r: "b.op" }> {
  return { r: "b.op", key, op, at, ...b, ...extra };
}
type BarrierRecordExtra = Partial<Pick<Extract<OrchestrationRecord, { r: "b.op" }>, "hosted" | "writes" | "version">>;

/** The answer a finished operation's record gives a repeat of it. */
export function recordedAnswer(done: BarrierOp): CallOutcome {
  switch (done.outcome) {
    case "ok":
    case "noop":
      return { outcome: "ok", result: done.result ?? null };
    case "refused":
      return { outcome: "fail", error: "refused by the barrier" };
    case "failed":
      return { outcome: "fail", error: done.error ?? "failed" };
    case "sent":
      throw new Error("a call that was only sent has no recorded answer");
  }
}

// ---- the lane: the order the operations of one key run in --------------------------

/** The operations of one key that arrived and have not finished, in arrival order. */
export type BarrierLane = ReadonlyArray<{ op: StepOp; running: boolean }>;

/**
 * Operation `op` arrives at its key's lane. join: the same operation is already in the lane (waiting or running):
 * its caller waits for that run's outcome. start: it runs now (nothing is ahead of it); otherwise it waits its turn.
 */
export function arrive(lane: BarrierLane, op: StepOp, broken?: BarrierBrokenRule): { lane: BarrierLane; join: boolean; start: boolean } {
  if (lane.some((x) => x.op === op)) return { lane, join: true, start: false };
  const start = lane.length === 0 || broken === "barrier-out-of-turn";
  return { lane: [...lane, { op, running: start }], join: false, start };
}

/** The run of `op` finished: it leaves the lane, and the operation whose turn it now is (if any) starts. */
export function leave(lane: BarrierLane, op: StepOp): { lane: BarrierLane; start?: StepOp } {
  const i = lane.findIndex((x) => x.op === op);
  if (i < 0 || !lane[i].running) throw new Error(`barrier lane: ${op} left without running (lane ${JSON.stringify(lane)})`);
  const rest = lane.filter((_, j) => j !== i);
  const next = rest[0];
  if (!next || next.running) return { lane: rest };
  return { lane: [{ op: next.op, running: true }, ...rest.slice(1)], start: next.op };
}
