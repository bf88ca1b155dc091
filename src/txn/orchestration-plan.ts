// What an orchestrated transaction does next, read from what its log holds
// (never from what is in flight, which a restart forgets). Pure: the
// orchestrator carries the plan out.
//
// 2PC: prepare every participant; all prepared → commit all; any other vote
//      (no, may have prepared, never reached) → abort every participant that
//      may have prepared. A definitive no did not prepare and is not sent abort
//      (presumed abort), nor is one that no prepare ever reached.
// Saga: run the actions in order; one that fails, may have applied or never
//      reached → compensate the steps that ran (or may have), newest first,
//      one at a time.
// Phase 2 (commit, abort, compensate) goes on past a participant that gave
// up; once every other one is done the transaction ends failed, naming it.
import type { TxnState } from "../protocol/messages.ts";
import type { StepOp, StepOutcome } from "../wal/orchestration-records.ts";
import { type Orch, last } from "./orchestration-state.ts";

export type Plan =
  | { k: "decide"; outcome: "commit" | "rollback" | "compensate"; reason?: string }
  | { k: "call"; op: StepOp; indexes: number[] }
  | { k: "end"; state: TxnState; reason?: string };

/** A vote that is not "prepared": the transaction rolls back. */
const rollsBack = new Set<StepOutcome>(["no", "maybe", "unreached"]);

export function planTwoPhase(o: Orch): Plan {
  const n = o.specs.length;
  if (!o.decision) {
    const i = o.done.findIndex((_, k) => rollsBack.has(last(o, k, "prepare")?.outcome ?? "ok"));
    if (i >= 0) {
      const d = last(o, i, "prepare")!;
      const who = o.specs[i].participantId;
      // A prepare that gave up says so in its error, which names the participant.
      const reason = d.outcome === "no" ? `${who} voted abort${d.error ? `: ${d.error}` : ""}` : (d.error ?? `${who} did not vote`);
      return { k: "decide", outcome: "rollback", reason };
    }
    if (o.done.every((_, k) => last(o, k, "prepare")?.outcome === "ok")) return { k: "decide", outcome: "commit" };
    return { k: "call", op: "prepare", indexes: [...Array(n).keys()].filter((k) => !last(o, k, "prepare")) };
  }
  const op = o.decision === "commit" ? "commit" : "abort";
  const needs = (k: number) => op === "commit" || mayHavePrepared(last(o, k, "prepare")?.outcome);
  const todo = [...Array(n).keys()].filter((k) => needs(k) && !last(o, k, op));
  if (todo.length) return { k: "call", op, indexes: todo };
  return ending(o, op === "commit" ? "committed" : "rolled_back", [op]);
}

/** No vote yet (a prepare in flight when the decision came), prepared, or gave up after one may have arrived. */
const mayHavePrepared = (vote: StepOutcome | undefined) => vote !== "no" && vote !== "unreached";

export function planSaga(o: Orch): Plan {
  // The current step: the first whose action has not finished ok.
  const current = o.done.findIndex((_, k) => last(o, k, "execute")?.outcome !== "ok");
  if (!o.decision) {
    if (current < 0) return { k: "end", state: "committed" };
    const d = last(o, current, "execute");
    if (!d) return { k: "call", op: "execute", indexes: [current] };
    const who = o.specs[current].participantId;
    const reason = d.outcome === "unreached" ? (d.error ?? `${who} was never reached`) : `${who} failed${d.error ? `: ${d.error}` : ""}`;
    return { k: "decide", outcome: "compensate", reason };
  }
  // Newest first, one at a time.
  for (let j = o.specs.length - 1; j >= 0; j--) {
    if (needsCompensation(o, j, current) && !last(o, j, "compensate")) return { k: "call", op: "compensate", indexes: [j] };
  }
  return ending(o, "compensated", ["compensate"]);
}

/**
 * A step is compensated if its action applied or may have. That includes the step whose action was in
 * flight at the decision (it has no logged result): decided from the log, not from o.inflight, because its
 * compensation replaces that entry and a restart forgets it (sim seeds 2, 4). An action that failed for
 * good or never reached the participant needs nothing.
 */
function needsCompensation(o: Orch, j: number, current: number): boolean {
  const ran = last(o, j, "execute")?.outcome;
  return ran === "ok" || ran === "maybe" || (ran === undefined && j === current);
}

/** Every phase-2 operation is done: the transaction ends as decided, or failed if one of them gave up. */
function ending(o: Orch, state: TxnState, ops: StepOp[]): Plan {
  const gaveUp: string[] = [];
  for (let i = 0; i < o.specs.length; i++) {
    for (const op of ops) {
      const d = last(o, i, op);
      if (d?.outcome === "failed") gaveUp.push(d.error ?? `${o.specs[i].participantId} ${op} gave up`);
    }
  }
  if (gaveUp.length === 0) return { k: "end", state, reason: o.reason };
  return { k: "end", state: "failed", reason: `${gaveUp.join("; ")} (while ${o.decision === "commit" ? "committing" : o.decision === "rollback" ? "rolling back" : "compensating"}${o.reason ? `: ${o.reason}` : ""})` };
}
