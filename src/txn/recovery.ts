// Start-up: the log's unfinished transactions back in memory before the sidecar
// is ready (DESIGN §6). Prepared branches take their locks again and ask their
// coordinators; decisions are announced again; a coordinator that crashed
// before every branch prepared rolls back (presumed abort); hosted prepares in
// doubt take their locks again and ask their orchestrators.
import type { BranchSummary, CoordinatorSummary } from "../wal/records.ts";
import type { BarrierSummary, OrchestrationSummary } from "../wal/orchestration-records.ts";
import { abort, announce } from "./coordinator.ts";
import { type Engine, bkey } from "./engine.ts";
import { abortIfCoordinatorForgot, abortUnprepared } from "./participant.ts";
import type { Branch, Coord } from "./state.ts";

export function onRecover(e: Engine, coordinators: CoordinatorSummary[], branches: BranchSummary[], now: number, orchestrations: OrchestrationSummary[] = [], hosted: BarrierSummary[] = []) {
  e.kvVersion = Math.max(e.kvVersion, e.reader.kvVersion());
  e.orchestrator.recover(orchestrations, now);
  e.hosted.recover(hosted);
  for (const s of branches) {
    if (s.state === "active") {
      abortUnprepared(e, s, now);
      continue;
    }
    const b = preparedBranch(e, s, now);
    const clash = e.locks.tryLockAll(bkey(b.name, b.id), b.locked);
    if (clash !== undefined) throw new Error(`recovery: key ${clash} locked by two prepared branches`);
    e.addBranch(b);
    abortIfCoordinatorForgot(e, b, now);
  }
  for (const s of coordinators) {
    const c = coordOf(s, now);
    e.addCoord(c);
    if (s.traceparent) e.traces.set(s.name, s.traceparent);
    if (s.state === "committing") {
      c.outcome = "commit";
      announce(e, c);
    } else if (s.state === "rolling_back") {
      c.outcome = "rollback";
      announce(e, c);
    } else if (s.state === "active") {
      // Crashed before every branch prepared: presumed abort.
      for (const b of c.branches.values()) b.vote = undefined;
      abort(e, c, "the coordinator restarted before the transaction was prepared", undefined, false, now);
    }
    // "prepared" waits for its client's decision (or preparedTimeoutMs).
  }
}

/** A branch the log holds prepared, in doubt until its coordinator answers. */
function preparedBranch(e: Engine, s: BranchSummary, now: number): Branch {
  const b = e.newBranch(s.name, s.branch, s.coordinator, "prepared", undefined, Infinity, now);
  b.resources = (s.resources ?? []).map((r) => ({ ...r, prepared: true }));
  b.incarnation = s.incarnation;
  b.vote = "yes";
  b.preparedAt = s.preparedAt;
  b.joinedAt = s.begunAt ?? 0;
  for (const [k, v, d] of s.writes) b.writes.set(k, { value: v, deleted: d });
  b.locked = [...new Set([...s.reads, ...s.writes.map((w) => w[0])])];
  b.lastContact = -Infinity; // ask at the first tick
  return b;
}

function coordOf(s: CoordinatorSummary, now: number): Coord {
  return {
    name: s.name,
    protocol: s.protocol,
    state: s.state,
    branches: new Map(s.branches.map((r) => [r.id, { id: r.id, sidecar: r.sidecar, acked: !!r.readonly, vote: r.readonly ? "readonly" : "yes" }])),
    createdAt: s.createdAt,
    deadline: now,
    timeoutMs: 0,
    preparedAt: s.preparedAt,
    decidedAt: s.decidedAt,
    preparedTimeoutMs: s.preparedTimeoutMs,
    traceparent: s.traceparent,
    durablePrepared: s.state !== "active",
    reason: s.reason,
    participant: s.participant,
    decideWaiters: [],
    lastResend: now,
  };
}
