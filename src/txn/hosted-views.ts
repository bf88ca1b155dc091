// What `status` answers on a sidecar for the participants it hosts for another
// sidecar's orchestrated transaction: read from its own log (the barrier's
// records), one view per execution, the orchestrator named as the one to ask
// for the rest.
import type { TxnState } from "../protocol/messages.ts";
import type { BarrierOp, BarrierSummary, StepOp } from "../wal/orchestration-records.ts";
import { isTerminal } from "../wal/records.ts";

/** What the barrier's outcome of each operation reads as, per participant. */
const statusNames: Record<StepOp, Partial<Record<BarrierOp["outcome"], string>>> = {
  prepare: { sent: "preparing", ok: "prepared", failed: "voted_abort", refused: "refused" },
  commit: { ok: "committed" },
  abort: { ok: "aborted", noop: "aborted" },
  execute: { sent: "executing", ok: "executed", failed: "failed", refused: "refused" },
  compensate: { ok: "compensated", noop: "compensated" },
};

/** Where one hosted participant stands, as a transaction state (for the view's state). */
function stateOf(ops: BarrierSummary["ops"]): TxnState {
  if (ops.compensate) return "compensated";
  if (ops.abort) return "rolled_back";
  if (ops.commit) return "committed";
  const prepare = ops.prepare?.outcome;
  if (prepare === "ok") return "prepared";
  if (prepare === "sent") return "preparing";
  if (prepare) return "rolled_back";
  const execute = ops.execute?.outcome;
  if (execute === "ok") return "committed"; // its step is applied; only the orchestrator knows whether the Saga goes on
  if (execute === "sent") return "active";
  return "compensated"; // the action was refused or failed: nothing of it is applied here
}

const progress: TxnState[] = ["active", "preparing", "prepared"];

/** The views of the participants of `name` hosted here for other sidecars, one per execution (incarnation). */
export function hostedViews(summaries: BarrierSummary[], self: string): Record<string, unknown>[] {
  const groups = new Map<string, BarrierSummary[]>();
  for (const s of summaries) {
    if (!s.hosted || s.hosted.orchestrator === self) continue; // its orchestrator's own view says it all
    const id = `${s.hosted.orchestrator}/${s.hosted.incarnation ?? ""}`;
    groups.set(id, [...(groups.get(id) ?? []), s]);
  }
  return [...groups.values()].map((g) => view(g, self));
}

function view(group: BarrierSummary[], self: string): Record<string, unknown> {
  const ref = group[0].hosted!;
  const states = group.map((s) => stateOf(s.ops));
  const live = states.filter((s) => !isTerminal(s));
  const state: TxnState = live.length
    ? progress[Math.min(...live.map((s) => progress.indexOf(s)))]
    : states.includes("compensated")
      ? "compensated"
      : states.includes("rolled_back")
        ? "rolled_back"
        : "committed";
  const steps = (s: BarrierSummary) =>
    (Object.entries(s.ops) as [StepOp, BarrierOp & { at: number }][]).map(([op, b]) => ({ op, outcome: b.outcome, at: b.at, ...(b.error ? { error: b.error } : {}) })).sort((a, b) => a.at - b.at);
  const ats = group.flatMap((s) => steps(s).map((x) => x.at));
  const prepared = group.map((s) => s.ops.prepare).filter((p) => p?.outcome === "ok").map((p) => p!.at);
  const finished = live.length ? null : Math.max(...group.map((s) => s.finishedAt));
  return {
    name: ref.name,
    state,
    protocol: group.some((s) => s.ops.prepare) ? "2pc" : "saga",
    kind: "orchestrated",
    coordinator: ref.orchestrator,
    participants: group.map((s) => {
      const last = steps(s).at(-1);
      return {
        participantId: s.hosted!.participantId,
        sidecar: self,
        endpoint: s.hosted!.endpoint,
        status: last ? (statusNames[last.op][last.outcome] ?? `${last.op}:${last.outcome}`) : "pending",
        result: s.ops.execute?.result ?? s.ops.prepare?.result ?? null,
        error: last?.error ?? null,
        steps: steps(s),
      };
    }),
    timestamps: { begun: ats.length ? Math.min(...ats) : null, prepared: prepared.length ? Math.max(...prepared) : null, decided: finished, finished },
    error: group.map((s) => steps(s).find((x) => x.error)?.error).find((e) => e !== undefined) ?? null,
  };
}
