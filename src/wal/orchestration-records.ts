// Log records of orchestrated transactions (createTransaction / execute:
// 2PC or Saga over HTTP, service-callback and built-in-store participants)
// and of the sub-transaction barrier in front of the participants a sidecar
// hosts for an orchestrator, itself or a peer (its services, its store).
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
  /** A stable code for why it did not succeed, when there is one (PARTICIPANT_UNAVAILABLE, …). */
  code?: string;
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
      /** This execution of the name (its participants' sidecars key their barrier by it); absent in older logs. */
      incarnation?: string;
    }
  | { r: "o.step"; name: string; index: number; op: StepOp; outcome: StepOutcome; result?: unknown; error?: string; code?: string; at: number; writes?: Write[]; version?: number; before?: Write[] }
  | { r: "o.decision"; name: string; outcome: "commit" | "rollback" | "compensate"; reason?: string; at: number }
  | { r: "o.end"; name: string; state: TxnState; reason?: string; at: number }
  // The barrier in front of a hosted participant, keyed by transaction, participant and incarnation (barrierKeyOf).
  // `hosted`: whose operation it is (absent in logs from before participants were hosted for peers).
  | ({ r: "b.op"; key: string; op: StepOp; at: number; hosted?: HostedRef; writes?: Write[]; version?: number } & BarrierOp);

/**
 * One operation at the barrier: sent (pushed to the service, no answer yet: it may have run); ok (with the
 * handler's result); failed (a definitive no to an action or prepare); noop (an undo whose action never
 * ran); refused (an action that arrived after its undo).
 */
export interface BarrierOp {
  outcome: "sent" | "ok" | "failed" | "noop" | "refused";
  result?: unknown;
  error?: string;
  /** A store step's action: the before-image its compensation writes back. */
  before?: Write[];
  /** A store's prepare: the write set it locked, written at commit. */
  prepared?: Write[];
}

/** Which participant of which orchestrated transaction a hosted barrier key serves, and who orchestrates it. */
export interface HostedRef {
  name: string;
  participantId: string;
  index: number;
  orchestrator: string;
  incarnation?: string;
  /** As this sidecar runs it: service:<name> or store:. */
  endpoint: string;
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
  incarnation?: string;
}

export interface BarrierSummary {
  key: string;
  /**
   * "prepared": a hosted prepare that was sent or answered ok and has no commit or abort yet (in doubt: recovery
   * loads it and it asks its orchestrator). Otherwise "committed", terminal, so that retention prunes it.
   */
  state: "committed" | "prepared";
  ops: Partial<Record<StepOp, BarrierOp & { at: number }>>;
  finishedAt: number;
  hosted?: HostedRef;
}

/** A hosted prepare that may have run and has no decision yet. */
export function inDoubt(ops: BarrierSummary["ops"]): boolean {
  const p = ops.prepare?.outcome;
  return (p === "ok" || p === "sent") && !ops.commit && !ops.abort;
}

/** One b.op record folded into its key's summary (also the barrier's view of records not yet appended). */
export function foldBarrier(prev: BarrierSummary | undefined, rec: Extract<OrchestrationRecord, { r: "b.op" }>): BarrierSummary {
  const { r: _r, key, op, at, hosted, writes: _w, version: _v, ...b } = rec;
  const ops = { ...(prev?.ops ?? {}), [op]: { ...b, at } };
  const ref = hosted ?? prev?.hosted;
  return { key, state: ref && inDoubt(ops) ? "prepared" : "committed", ops, finishedAt: at, ...(ref ? { hosted: ref } : {}) };
}

export const orchestrationKey = (name: string) => `o/${name}`;
export const barrierKey = (key: string) => `b/${key}`;

export function foldOrchestration(prev: OrchestrationSummary | BarrierSummary | undefined, rec: OrchestrationRecord): OrchestrationSummary | BarrierSummary {
  if (rec.r === "b.op") return foldBarrier(prev as BarrierSummary | undefined, rec);
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
      ...(rec.incarnation !== undefined ? { incarnation: rec.incarnation } : {}),
    };
  }
  const p = prev as OrchestrationSummary;
  switch (rec.r) {
    case "o.step": {
      // Absent fields are left out (an undefined would be written as MessagePack ext 0 in status replies).
      const step: StepDone = { op: rec.op, outcome: rec.outcome, at: rec.at };
      if (rec.result !== undefined) step.result = rec.result;
      if (rec.error !== undefined) step.error = rec.error;
      if (rec.code) step.code = rec.code;
      const done = p.done.map((d, i) => (i === rec.index ? [...d, step] : d));
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
