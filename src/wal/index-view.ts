// The in-memory view both Wal implementations need to answer reads and to
// fold records: shared here so the fold and the reads are written once.
import type { TxnState } from "../protocol/messages.ts";
import type { BarrierSummary, OrchestrationSummary } from "./orchestration-records.ts";
import type { KvEntry } from "./wal.ts";
import {
  type AnySummary,
  type BranchSummary,
  type CoordinatorSummary,
  type LogRecord,
  branchKey,
  coordinatorKey,
  foldRecord,
  isTerminal,
  recordKey,
  recordKvWrites,
} from "./records.ts";

export type Summary = AnySummary;

/** Minimal map-like storage the fold writes through (a Map, or LMDB dbis). */
export interface IndexStore {
  getSummary(key: string): Summary | undefined;
  putSummary(key: string, s: Summary): void;
  getKv(key: string): KvEntry | undefined;
  putKv(key: string, e: KvEntry | undefined): void;
  putKvVersion(v: number): void;
}

/** Records that start a fresh summary: folding them needs nothing from before. */
const startsFresh = new Set(["c.prepared", "p.prepared", "o.begin"]);

/** Apply records in order through an IndexStore, reading each summary at most once. */
export function applyRecords(store: IndexStore, records: Iterable<LogRecord>): void {
  const seen = new Map<string, Summary>();
  for (const rec of records) {
    const key = recordKey(rec);
    const prev = startsFresh.has(rec.r) ? undefined : (seen.get(key) ?? store.getSummary(key));
    const next = foldRecord(prev, rec);
    seen.set(key, next);
    store.putSummary(key, next);
    const kv = recordKvWrites(rec);
    if (kv) {
      for (const [k, value, deleted] of kv.writes) store.putKv(k, deleted ? undefined : { value, version: kv.version });
      store.putKvVersion(kv.version);
    }
  }
}

export function filterUnfinished(summaries: Iterable<[string, Summary]>) {
  const coordinators: CoordinatorSummary[] = [];
  const branches: BranchSummary[] = [];
  const orchestrations: OrchestrationSummary[] = [];
  const hosted: BarrierSummary[] = [];
  for (const [key, s] of summaries) {
    // A failed orchestration waits for an operator; it is loaded so it can be resolved.
    if (isTerminal(s.state)) continue;
    if (key.startsWith("c/")) coordinators.push(s as CoordinatorSummary);
    else if (key.startsWith("p/")) branches.push(s as BranchSummary);
    else if (key.startsWith("o/")) orchestrations.push(s as OrchestrationSummary);
    else if (key.startsWith("b/")) hosted.push(s as BarrierSummary); // a hosted prepare in doubt
  }
  return { coordinators, branches, orchestrations, hosted };
}

/** Transactions this node coordinates (plain and orchestrated), optionally in one state. */
export function filterList(summaries: Iterable<[string, Summary]>, opts: { state?: TxnState; limit?: number }) {
  const out: (CoordinatorSummary | OrchestrationSummary)[] = [];
  const limit = opts.limit ?? 1000;
  for (const [key, s] of summaries) {
    if (!key.startsWith("c/") && !key.startsWith("o/")) continue;
    if (opts.state && s.state !== opts.state) continue;
    out.push(s as CoordinatorSummary | OrchestrationSummary);
    if (out.length >= limit) break;
  }
  return out;
}

export function isPrunable(s: Summary, before: number): boolean {
  return isTerminal(s.state) && ((s as { finishedAt?: number }).finishedAt ?? 0) < before;
}

/** Of these barrier entries, the ones a node hosted for an orchestrator (entries from older logs say nothing of it). */
export function filterHosted(summaries: Iterable<[string, Summary]>): BarrierSummary[] {
  const out: BarrierSummary[] = [];
  for (const [, s] of summaries) if ((s as BarrierSummary).hosted) out.push(s as BarrierSummary);
  return out;
}

export { branchKey, coordinatorKey };
