// Read-only views of the engine's state and of the log's index: what `status`
// and `list` answer. A sidecar answers for every transaction it took part in,
// as coordinator or only through its branches, for the retention window, from
// memory while the work is live and from the log afterwards.
import type { TxnState } from "../protocol/messages.ts";
import type { BranchSummary, CoordinatorSummary } from "../wal/records.ts";
import { isTerminal } from "../wal/records.ts";
import type { Branch, Coord } from "./state.ts";

export type StatusView = {
  name: string;
  state: TxnState;
  protocol: string | null;
  coordinator: string;
  participants: Record<string, unknown>[];
  timestamps: { begun: number | null; prepared: number | null; decided: number | null; finished: number | null };
  error: string | null;
  [k: string]: unknown;
};

export function coordStatus(c: Coord, self: string): StatusView {
  return {
    name: c.name,
    state: c.state,
    protocol: c.protocol,
    coordinator: self,
    participants: [...c.branches.values()].map((b) => ({ branch: b.id, sidecar: b.sidecar, vote: b.vote ?? null, acked: b.acked })),
    timestamps: { begun: c.createdAt, prepared: c.preparedAt ?? null, decided: c.decidedAt ?? null, finished: c.finishedAt ?? null },
    error: c.reason ?? null,
  };
}

export function summaryStatus(s: CoordinatorSummary, self: string): StatusView {
  return {
    name: s.name,
    state: s.state,
    protocol: s.protocol,
    coordinator: self,
    participants: s.branches.map((b) => ({ branch: b.id, sidecar: b.sidecar, vote: b.readonly ? "readonly" : s.state === "active" ? null : "yes", acked: isTerminal(s.state) })),
    timestamps: { begun: s.createdAt, prepared: s.preparedAt ?? null, decided: s.decidedAt ?? null, finished: s.finishedAt ?? null },
    error: s.reason ?? null,
  };
}

/** One branch as this sidecar knows it, from memory or from the log. */
interface BranchRow {
  id: string;
  coordinator: string;
  incarnation?: string;
  state: TxnState;
  vote: string | null;
  begun?: number;
  prepared?: number;
  finished?: number;
  reason?: string;
}

const branchStates: Record<Branch["state"], TxnState> = {
  joining: "active",
  active: "active",
  done: "preparing",
  prepared: "prepared",
  committed: "committed",
  rolled_back: "rolled_back",
};

function rowOfBranch(b: Branch): BranchRow {
  return {
    id: b.id,
    coordinator: b.coordinator,
    incarnation: b.incarnation,
    state: branchStates[b.state],
    vote: b.vote ?? null,
    begun: b.joinedAt || undefined,
    prepared: b.preparedAt,
    finished: b.finishedAt,
    reason: b.reason,
  };
}

function rowOfSummary(s: BranchSummary): BranchRow {
  return {
    id: s.branch,
    coordinator: s.coordinator,
    incarnation: s.incarnation,
    state: s.state,
    vote: s.vote ?? null,
    begun: s.begunAt,
    prepared: s.preparedAt,
    finished: s.finishedAt,
    reason: s.reason,
  };
}

const progress: TxnState[] = ["active", "preparing", "prepared"];

/** The transaction as this sidecar's branches of it saw it (it does not coordinate it). */
function branchGroupStatus(name: string, self: string, rows: BranchRow[]): StatusView {
  const live = rows.filter((r) => !isTerminal(r.state));
  // Still running: as far along as its least advanced branch. Finished: rolled back if any branch here was.
  const state: TxnState = live.length
    ? progress[Math.min(...live.map((r) => progress.indexOf(r.state)))]
    : rows.some((r) => r.state === "rolled_back")
      ? "rolled_back"
      : "committed";
  const times = (f: (r: BranchRow) => number | undefined) => rows.map(f).filter((t): t is number => t !== undefined);
  const begun = times((r) => r.begun);
  const prepared = times((r) => r.prepared);
  const finished = times((r) => r.finished);
  return {
    name,
    state,
    protocol: "2pc",
    coordinator: rows[0].coordinator,
    participants: rows.map((r) => ({ branch: r.id, sidecar: self, vote: r.vote, acked: isTerminal(r.state) })),
    timestamps: {
      begun: begun.length ? Math.min(...begun) : null,
      prepared: prepared.length ? Math.max(...prepared) : null,
      decided: live.length ? null : finished.length ? Math.max(...finished) : null,
      finished: live.length ? null : finished.length ? Math.max(...finished) : null,
    },
    error: rows.find((r) => r.state === "rolled_back" && r.reason)?.reason ?? null,
  };
}

/**
 * The branches of `name` on this sidecar, from memory and the log, one view per transaction (a name can
 * be reused once its transaction finished: the incarnation tells them apart).
 */
export function branchViews(name: string, self: string, inMemory: Iterable<Branch>, logged: BranchSummary[]): StatusView[] {
  const rows = new Map<string, BranchRow>();
  for (const s of logged) rows.set(s.branch, rowOfSummary(s));
  for (const b of inMemory) if (b.name === name) rows.set(b.id, rowOfBranch(b)); // memory is newer than the log
  const groups = new Map<string, BranchRow[]>();
  for (const r of rows.values()) {
    const key = r.incarnation ?? `${r.coordinator}?`;
    const g = groups.get(key);
    if (g) g.push(r);
    else groups.set(key, [r]);
  }
  return [...groups.values()].map((g) => branchGroupStatus(name, self, g));
}

/** Of several views of one name, the one a client asking means: the unfinished one, else the one that finished last. */
export function newestView(views: StatusView[]): StatusView | undefined {
  const unfinished = views.find((v) => !isTerminal(v.state));
  if (unfinished) return unfinished;
  const at = (v: StatusView) => v.timestamps.finished ?? v.timestamps.decided ?? v.timestamps.begun ?? 0;
  let best: StatusView | undefined;
  for (const v of views) if (!best || at(v) > at(best)) best = v;
  return best;
}
