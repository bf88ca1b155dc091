// The in-memory state of one orchestrated transaction, how it is rebuilt
// from the log, and how it reads to a client (execute's result, status).
import type { TxnState } from "../protocol/messages.ts";
import { type ParticipantSpec, parseEndpoint } from "../protocol/orchestration.ts";
import type { OrchestrationSummary, StepDone, StepOp, StepOutcome } from "../wal/orchestration-records.ts";
import type { Protocol, Write } from "../wal/records.ts";
import { timing } from "../limits.ts";
import type { Requirements } from "./select.ts";
import type { ReplyTo } from "./types.ts";

/** One operation under way on one participant: its attempts so far, in this process. */
export interface Inflight {
  op: StepOp;
  callId: number;
  attempts: number;
  firstAt: number;
  nextAt: number;
  outstanding: boolean;
  /** A call to a hosted participant is given up on at this time (an HTTP call's timeout is its fetch's). */
  deadline?: number;
  /** Some attempt may have reached the participant (false only while every attempt provably never left). */
  reached: boolean;
  lastError?: string;
  lastCode?: string;
}

export interface Orch {
  name: string;
  state: TxnState;
  choice: "auto" | Protocol;
  protocol?: Protocol;
  /** This execution of the name (o.begin): the participants' sidecars key their barrier by it. */
  incarnation?: string;
  requirements: Requirements;
  context?: unknown;
  timeoutMs: number;
  createdAt: number;
  deadline: number;
  specs: ParticipantSpec[];
  done: StepDone[][];
  before: Record<number, Write[]>;
  decision?: "commit" | "rollback" | "compensate";
  decidedAt?: number;
  finishedAt?: number;
  reason?: string;
  inflight: Map<number, Inflight>;
  waiters: ReplyTo[];
  /** o.begin is logged: from here on the protocol is fixed and the transaction is recovered. */
  executed: boolean;
  /**
   * Participants whose prepare or action an earlier process of this sidecar may have called (it was due
   * when the log was read back): its attempts count as having reached the participant.
   */
  calledBefore: Set<number>;
}

/** This sidecar's store under a Saga: its steps run inline, logged with the step. */
export const isStore = (s: ParticipantSpec) => s.endpoint === "store:";

/**
 * The sidecar that hosts a participant and the endpoint it runs there: every service (a local one is hosted
 * by this sidecar itself) and a store named by its sidecar's id. Undefined for HTTP and for `store:`.
 */
export function hostOf(s: ParticipantSpec, self: string): { sidecar: string; endpoint: string } | undefined {
  const e = parseEndpoint(s.endpoint);
  if (e?.kind === "service") return { sidecar: e.sidecar ?? self, endpoint: `service:${e.service}` };
  if (e?.kind === "store" && e.sidecar !== undefined) return { sidecar: e.sidecar, endpoint: "store:" };
  return undefined;
}

/** The sidecar a participant lives on, for status: null for an HTTP endpoint. */
export const sidecarOf = (s: ParticipantSpec, self: string): string | null => (isStore(s) ? self : (hostOf(s, self)?.sidecar ?? null));

/** The last finished `op` of participant i, from the log. */
export function last(o: Orch, i: number, op: StepOp): StepDone | undefined {
  const d = o.done[i];
  for (let k = d.length - 1; k >= 0; k--) if (d[k].op === op) return d[k];
  return undefined;
}

/** Prepares (2PC) or the current action (Saga) that may have been in flight when the log was read back. */
function dueAtRecovery(s: OrchestrationSummary): Set<number> {
  const due = new Set<number>();
  if (s.decision || s.state === "failed" || s.state === "committed" || s.state === "rolled_back" || s.state === "compensated") return due;
  const has = (i: number, op: StepOp) => s.done[i].some((d) => d.op === op);
  if (s.protocol === "2pc") {
    for (let i = 0; i < s.done.length; i++) if (!has(i, "prepare")) due.add(i);
    return due;
  }
  const current = s.done.findIndex((d) => !d.some((x) => x.op === "execute" && x.outcome === "ok"));
  if (current >= 0 && !has(current, "execute")) due.add(current);
  return due;
}

export function orchFromSummary(s: OrchestrationSummary, now: number): Orch {
  return {
    name: s.name,
    state: s.state,
    choice: s.protocol,
    protocol: s.protocol,
    incarnation: s.incarnation,
    requirements: s.requirements as Requirements,
    context: s.context,
    timeoutMs: s.timeoutMs ?? timing.orchestrationTimeoutMs,
    createdAt: s.createdAt,
    // The deadline it was executed with, across restarts (a log from before timeoutMs was recorded: from now).
    deadline: s.executedAt !== undefined && s.timeoutMs !== undefined ? s.executedAt + s.timeoutMs : now + timing.orchestrationTimeoutMs,
    specs: s.participants,
    done: s.done.map((d) => [...d]),
    before: { ...s.before },
    decision: s.decision,
    decidedAt: s.decidedAt,
    finishedAt: s.finishedAt,
    reason: s.reason,
    inflight: new Map(),
    waiters: [],
    executed: true,
    calledBefore: dueAtRecovery(s),
  };
}

/** What execute and abort answer: the outcome and, per participant, where it ended. */
export function resultOf(o: Orch, self: string) {
  return {
    name: o.name,
    outcome: o.state,
    protocol: o.protocol ?? null,
    reason: o.reason ?? null,
    participants: o.specs.map((s, i) => {
      const d = o.done[i];
      const lastDone = d[d.length - 1];
      return {
        participantId: s.participantId,
        sidecar: sidecarOf(s, self),
        status: participantStatus(d),
        result: [...d].reverse().find((x) => x.op === "execute" || x.op === "prepare")?.result ?? null,
        error: lastDone?.error ?? o.inflight.get(i)?.lastError ?? null,
        code: (lastDone ? lastDone.code : o.inflight.get(i)?.lastCode) ?? null,
      };
    }),
  };
}

export function statusOf(o: Orch, coordinator: string) {
  return {
    name: o.name,
    state: o.state,
    protocol: o.protocol ?? null,
    kind: "orchestrated",
    coordinator,
    participants: resultOf(o, coordinator).participants.map((p, i) => ({ ...p, endpoint: o.specs[i].endpoint, steps: o.done[i] })),
    timestamps: { begun: o.createdAt, prepared: null, decided: o.decidedAt ?? null, finished: o.finishedAt ?? null },
    error: o.reason ?? null,
  };
}

const statusNames: Record<StepOp, Partial<Record<StepOutcome, string>>> = {
  prepare: { ok: "prepared", no: "voted_abort", maybe: "unknown", unreached: "not_reached" },
  commit: { ok: "committed", failed: "commit_failed" },
  abort: { ok: "aborted", noop: "aborted", failed: "abort_failed" },
  execute: { ok: "executed", failed: "failed", maybe: "unknown", unreached: "not_reached" },
  compensate: { ok: "compensated", noop: "compensated", failed: "compensation_failed" },
};

function participantStatus(d: StepDone[]): string {
  const x = d[d.length - 1];
  if (!x) return "pending";
  return statusNames[x.op][x.outcome] ?? `${x.op}:${x.outcome}`;
}
