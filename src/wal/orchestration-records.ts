// Log records of orchestrated transactions (createTransaction / execute:
// 2PC or Saga over HTTP, service-callback and built-in-store participants)
// and of the sub-transaction barrier in front of service callbacks.
import type { TxnState } from "../protocol/messages.ts";
import type { ParticipantSpec } from "../protocol/orchestration.ts";
import type { Protocol, Write } from "./types.ts";

/** An operation on one participant of an orchestrated transaction. */
export type StepOp = "prepare" | "commit" | "abort" | "execute" | "compensate";

/**
 * How an operation ended: ok; no (a prepare voted abort: it did not prepare);
 * failed (an action failed for good, or a commit, abort or compensation gave
 * up: an operator must look); maybe (a prepare or action gave up retrying and
 * may have applied, so it is aborted or compensated too); unreached (a prepare
 * or action none of whose calls could have reached the participant: not
 * applied, nothing to undo); noop (a compensation of an action that never ran).
 */
export type StepOutcome = "ok" | "no" | "failed" | "maybe" | "unreached" | "noop";

export interface StepDone {
  op: StepOp;
  outcome: StepOutcome;
  result?: unknown;
  error?: string;
  at: number;
}

export type OrchestrationRecord =
  | {
      r: "o.begin";
      name: string;
      protocol: Protocol;
      participants: ParticipantSpec[];
      requirements: { consistency?: string; availability?: string };
      context?: unknown;
      createdAt: number;
      at: number;
      /** How long it may take to decide, from `at` (execute): kept so a restart keeps the same deadline. */
      timeoutMs?: number;
    }
  | { r: "o.step"; name: string; index: number; op: StepOp; outcome: StepOutcome; result?: unknown; error?: string; at: number; writes?: Write[]; version?: number; before?: Write[] }
  | { r: "o.decision"; name: string; outcome: "commit" | "rollback" | "compensate"; reason?: string; at: number }
  | { r: "o.end"; name: string; state: TxnState; reason?: string; at: number }
  // The barrier in front of a service callback, keyed by the call's idempotency key base.
  | ({ r: "b.op"; key: string; op: StepOp; at: number } & BarrierOp);

/**
 * One operation at the barrier: sent (pushed to the service, no answer yet: it may have run); ok (with the
 * handler's result); failed (a definitive no to an action or prepare); noop (an undo whose action never
 * ran); refused (an action that arrived after its undo).
 */
export interface BarrierOp {
  outcome: "sent" | "ok" | "failed" | "noop" | "refused";
  result?: unknown;
  error?: string;
}

export interface OrchestrationSummary {
  name: string;
  protocol: Protocol;
  state: TxnState;
  participants: ParticipantSpec[];
  /** Per participant, the operations that finished, in order. */
  done: StepDone[][];
  requirements: { consistency?: string; availability?: string };
  context?: unknown;
  createdAt: number;
  decision?: "commit" | "rollback" | "compensate";
  decidedAt?: number;
  finishedAt?: number;
  reason?: string;
  /** Before-images of built-in store steps, per participant index, for compensation. */
  before: Record<number, Write[]>;
  /** Its decision deadline: executedAt + timeoutMs (absent in logs written before it was recorded). */
  timeoutMs?: number;
  executedAt?: number;
}

export interface BarrierSummary {
  key: string;
  /** Terminal so that retention prunes it like a finished transaction. */
  state: "committed";
  ops: Partial<Record<StepOp, BarrierOp>>;
  finishedAt: number;
}

export const orchestrationKey = (name: string) => `o/${name}`;
export const barrierKey = (key: string) => `b/${key}`;

export function foldOrchestration(prev: OrchestrationSummary | BarrierSummary | undefined, rec: OrchestrationRecord): OrchestrationSummary | BarrierSummary {
  if (rec.r === "b.op") {
    const p = prev as BarrierSummary | undefined;
    return { key: rec.key, state: "committed", ops: { ...(p?.ops ?? {}), [rec.op]: { outcome: rec.outcome, result: rec.result, error: rec.error } }, finishedAt: rec.at };
  }
  if (rec.r === "o.begin") {
    return {
      name: rec.name,
      protocol: rec.protocol,
      state: rec.protocol === "2pc" ? "preparing" : "active",
      participants: rec.participants,
      done: rec.participants.map(() => []),
      requirements: rec.requirements,
      context: rec.context,
      createdAt: rec.createdAt,
      before: {},
      ...(rec.timeoutMs !== undefined ? { timeoutMs: rec.timeoutMs, executedAt: rec.at } : {}),
    };
  }
  const p = prev as OrchestrationSummary;
  switch (rec.r) {
    case "o.step": {
      const done = p.done.map((d, i) => (i === rec.index ? [...d, { op: rec.op, outcome: rec.outcome, result: rec.result, error: rec.error, at: rec.at }] : d));
      const before = rec.before ? { ...p.before, [rec.index]: rec.before } : p.before;
      return { ...p, done, before };
    }
    case "o.decision":
      return {
        ...p,
        decision: rec.outcome,
        decidedAt: rec.at,
        reason: rec.reason ?? p.reason,
        state: rec.outcome === "commit" ? "committing" : rec.outcome === "rollback" ? "rolling_back" : "compensating",
      };
    case "o.end":
      return { ...p, state: rec.state, finishedAt: rec.at, reason: rec.reason ?? p.reason };
  }
}

export function orchestrationRecordKey(rec: OrchestrationRecord): string {
  return rec.r === "b.op" ? barrierKey(rec.key) : orchestrationKey(rec.name);
}
