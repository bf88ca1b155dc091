// Read-only views of the engine's state and of the log's index: what `status`
// and `list` answer. A sidecar answers for every transaction it took part in,
// as coordinator or only through its branches, for the retention window, from
// memory while the work is live and from the log afterwards. Also the counts
// the sidecar's metrics and SQL reconciler read, so nothing outside scans the
// engine's maps.
import { ErrorCode, type WireError, wireError } from "../protocol/errors.ts";
import type { TxnState } from "../protocol/messages.ts";
import { limits, timing } from "../limits.ts";
import type { BranchSummary, CoordinatorSummary } from "../wal/records.ts";
import { isTerminal } from "../wal/records.ts";
import type { Engine } from "./engine.ts";
import { hostedViews } from "./hosted-views.ts";
import type { Branch, Coord } from "./state.ts";

const hourMs = 3_600_000;

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

function coordStatus(c: Coord, self: string): StatusView {
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

function summaryStatus(s: CoordinatorSummary, self: string): StatusView {
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
function branchViews(name: string, self: string, inMemory: Iterable<Branch>, logged: BranchSummary[]): StatusView[] {
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
function newestView(views: StatusView[]): StatusView | undefined {
  const unfinished = views.find((v) => !isTerminal(v.state));
  if (unfinished) return unfinished;
  const at = (v: StatusView) => v.timestamps.finished ?? v.timestamps.decided ?? v.timestamps.begun ?? 0;
  let best: StatusView | undefined;
  for (const v of views) if (!best || at(v) > at(best)) best = v;
  return best;
}

// ---- views over the engine ------------------------------------------------------

/** Every view of `name` this sidecar has, orchestrated, coordinated, hosted or through its branches; the newest answers. */
export function status(e: Engine, name: string): StatusView | undefined {
  const views: StatusView[] = [];
  const o = e.orchestrator.status(name);
  if (o) views.push(o as StatusView);
  const c = e.coords.get(name);
  const s = c ? undefined : e.reader.coordinator(name);
  if (c) views.push(coordStatus(c, e.id));
  else if (s) views.push(summaryStatus(s, e.id));
  for (const v of hostedViews(e.reader.hostedOf(name), e.id)) views.push(v as StatusView);
  for (const v of branchViews(name, e.id, e.byName.get(name) ?? [], e.reader.branchesOf(name))) {
    if (v.coordinator !== e.id) views.push(v);
    // A branch whose coordinator is this node, which holds no record of the name: presumed abort.
    else if (!c && !s) views.push({ ...v, state: v.state === "rolled_back" ? "rolled_back" : "rolling_back" });
  }
  return newestView(views);
}

/** What status answers for a name this sidecar has no view of. */
export function unknownTransaction(e: Engine, name: string): WireError {
  return wireError(
    ErrorCode.NOT_FOUND,
    `sidecar ${e.id} has no record of a transaction "${name}" in the last ${Math.round(timing.retentionMs / hourMs)} h: it neither coordinated it nor prepared a branch of it (a branch that only read leaves no record); ask its coordinator`,
  );
}

/** Transactions in memory first (coordinated, then orchestrated), then the log's; at most `limit`. */
export function list(e: Engine, state: TxnState | undefined, limit: number = limits.listRowsDefault): Record<string, unknown>[] {
  const seen = new Set<string>();
  const out: Record<string, unknown>[] = [];
  for (const c of e.coords.values()) {
    if (out.length >= limit) break;
    seen.add(c.name);
    if (!state || c.state === state) out.push(coordStatus(c, e.id));
  }
  for (const o of e.orchestrator.list(state)) {
    if (out.length >= limit) break;
    seen.add(o.name as string);
    out.push(o);
  }
  for (const s of e.reader.list({ state, limit })) {
    if (out.length >= limit) break;
    if (seen.has(s.name)) continue;
    out.push("branches" in s ? summaryStatus(s, e.id) : (e.orchestrator.status(s.name) ?? { name: s.name, state: s.state }));
  }
  return out;
}

/** A branch of `name` with this id is in memory and not finished (the SQL reconciler leaves its gids alone). */
export function branchLive(e: Engine, name: string, branch: string): boolean {
  const b = e.branch(name, branch);
  return b !== undefined && b.state !== "committed" && b.state !== "rolled_back";
}

/** Branches that voted yes and wait for their coordinator's decision, and hosted prepares that wait for their orchestrator's. */
export function inDoubtBranches(e: Engine): number {
  let n = e.hosted.inDoubtCount;
  for (const b of e.branches.values()) if (b.state === "prepared") n++;
  return n;
}

/** Transactions in memory by state: coordinated ones and executed orchestrations. */
export function transactionsByState(e: Engine): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const c of e.coords.values()) counts[c.state] = (counts[c.state] ?? 0) + 1;
  for (const o of e.orchestrator.orchs.values()) if (o.executed) counts[o.state] = (counts[o.state] ?? 0) + 1;
  return counts;
}
