// Durable log records and the summaries they fold into (the transaction index).
// Both Wal implementations use foldRecord, so LMDB and memory cannot disagree.
import type { TxnState } from "../protocol/messages.ts";
import { type BarrierSummary, type OrchestrationRecord, type OrchestrationSummary, foldOrchestration, orchestrationRecordKey } from "./orchestration-records.ts";
import type { Protocol, Write } from "./types.ts";

export type { Protocol, Write } from "./types.ts"; // where the engine reads them

export type Outcome = "commit" | "rollback";

export interface BranchRef {
  id: string;
  sidecar: string;
  /** Read-only branches voted "readonly" and take no part in phase 2. */
  readonly?: boolean;
}

/** A database a branch runs SQL in (DESIGN §5.3): prepared by the service under `gid`, finished by the sidecar. */
export interface SqlResourceRef {
  db: string;
  gid: string;
  kind: "postgres" | "mysql";
}

export type LogRecord =
  | OrchestrationRecord
  // Coordinator side. Before c.prepared nothing needs to be durable except enlistments.
  | { r: "c.enlist"; name: string; protocol: Protocol; branch: BranchRef; at: number }
  | {
      r: "c.prepared";
      name: string;
      protocol: Protocol;
      branches: BranchRef[];
      createdAt: number;
      at: number;
      preparedTimeoutMs?: number;
      traceparent?: string;
    }
  | { r: "c.decision"; name: string; protocol: Protocol; outcome: Outcome; branches: BranchRef[]; createdAt: number; at: number; reason?: string; participant?: string }
  | { r: "c.end"; name: string; protocol: Protocol; outcome: Outcome; branches: BranchRef[]; createdAt: number; at: number; reason?: string; participant?: string; conflict?: boolean }
  // Participant side.
  // Logged before the service is told the gid, so every dtx gid in a database has a record (or is an orphan).
  | { r: "p.resource"; name: string; branch: string; coordinator: string; resource: SqlResourceRef; at: number }
  // `incarnation` names the transaction (its coordinator's own branch), so status tells two transactions of one name apart; `begun`: when the branch began.
  | { r: "p.prepared"; name: string; branch: string; coordinator: string; writes: Write[]; reads: string[]; at: number; resources?: SqlResourceRef[]; incarnation?: string; begun?: number }
  // `vote` and `reason`: of a branch that never prepared (voted no, read-only, or rolled back first), logged for status only.
  | {
      r: "p.end";
      name: string;
      branch: string;
      coordinator: string;
      outcome: Outcome;
      writes: Write[];
      version: number;
      at: number;
      incarnation?: string;
      begun?: number;
      vote?: "no" | "readonly";
      reason?: string;
    };

export interface CoordinatorSummary {
  name: string;
  protocol: Protocol;
  state: TxnState;
  branches: BranchRef[];
  createdAt: number;
  preparedAt?: number;
  decidedAt?: number;
  finishedAt?: number;
  preparedTimeoutMs?: number;
  reason?: string;
  participant?: string;
  /** Rolled back because a branch saw a conflict (TransactionConflictError rather than TransactionAbortedError). */
  conflict?: boolean;
  traceparent?: string;
}

export interface BranchSummary {
  name: string;
  branch: string;
  coordinator: string;
  /** "active": only SQL resources registered (p.resource), not prepared; presumed abort after a crash. */
  state: "active" | "prepared" | "committed" | "rolled_back";
  writes: Write[];
  reads: string[];
  resources?: SqlResourceRef[];
  preparedAt?: number;
  finishedAt?: number;
  incarnation?: string;
  begunAt?: number;
  /** "yes" once prepared; "no"/"readonly" as logged by a branch that never prepared; absent: rolled back before it voted. */
  vote?: "yes" | "no" | "readonly";
  reason?: string;
}

export const coordinatorKey = (name: string) => `c/${name}`;
export const branchKey = (name: string, branch: string) => `p/${name}/${branch}`;

export function isTerminal(state: TxnState): boolean {
  return state === "committed" || state === "rolled_back" || state === "compensated";
}

/** The index key a record updates. */
export function recordKey(rec: LogRecord): string {
  if (rec.r.startsWith("o.") || rec.r === "b.op") return orchestrationRecordKey(rec as OrchestrationRecord);
  return rec.r.startsWith("c.") ? coordinatorKey(rec.name) : branchKey(rec.name, (rec as { branch: string }).branch);
}

/** Fold one record into the summary stored under recordKey(rec). Pure. */
export type AnySummary = CoordinatorSummary | BranchSummary | OrchestrationSummary | BarrierSummary;

export function foldRecord(prev: AnySummary | undefined, rec: LogRecord): AnySummary {
  switch (rec.r) {
    case "o.begin":
    case "o.step":
    case "o.decision":
    case "o.end":
    case "b.op":
      return foldOrchestration(prev as OrchestrationSummary | BarrierSummary | undefined, rec);
    case "c.enlist": {
      const p = prev as CoordinatorSummary | undefined;
      const base: CoordinatorSummary =
        p && !isTerminal(p.state) ? p : { name: rec.name, protocol: rec.protocol, state: "active", branches: [], createdAt: rec.at };
      if (base.branches.some((b) => b.id === rec.branch.id)) return base;
      return { ...base, branches: [...base.branches, rec.branch] };
    }
    case "c.prepared":
      return {
        name: rec.name,
        protocol: rec.protocol,
        state: "prepared",
        branches: rec.branches,
        createdAt: rec.createdAt,
        preparedAt: rec.at,
        preparedTimeoutMs: rec.preparedTimeoutMs,
        traceparent: rec.traceparent,
      };
    case "c.decision": {
      const p = prev as CoordinatorSummary | undefined;
      return {
        ...(p ?? {}),
        name: rec.name,
        protocol: rec.protocol,
        state: rec.outcome === "commit" ? "committing" : "rolling_back",
        branches: rec.branches,
        createdAt: rec.createdAt,
        decidedAt: rec.at,
        reason: rec.reason,
        participant: rec.participant,
      };
    }
    case "c.end": {
      const p = prev as CoordinatorSummary | undefined;
      return {
        ...(p ?? {}),
        name: rec.name,
        protocol: rec.protocol,
        state: rec.outcome === "commit" ? "committed" : "rolled_back",
        branches: rec.branches,
        createdAt: rec.createdAt,
        decidedAt: p?.decidedAt ?? rec.at,
        finishedAt: rec.at,
        reason: rec.reason,
        participant: rec.participant,
        ...(rec.conflict ? { conflict: true } : {}),
      };
    }
    case "p.resource": {
      const p = prev as BranchSummary | undefined;
      if (p && p.state !== "active") return p;
      const resources = p?.resources ?? [];
      if (resources.some((r) => r.gid === rec.resource.gid)) return p!;
      return { name: rec.name, branch: rec.branch, coordinator: rec.coordinator, state: "active", writes: [], reads: [], resources: [...resources, rec.resource] };
    }
    case "p.prepared":
      return {
        name: rec.name,
        branch: rec.branch,
        coordinator: rec.coordinator,
        state: "prepared",
        writes: rec.writes,
        reads: rec.reads,
        preparedAt: rec.at,
        vote: "yes",
        ...(rec.resources?.length ? { resources: rec.resources } : {}),
        ...defined({ incarnation: rec.incarnation, begunAt: rec.begun }),
      };
    case "p.end": {
      const p = prev as BranchSummary | undefined;
      // Terminal branches keep no write set: the data now lives in the store.
      return {
        name: rec.name,
        branch: rec.branch,
        coordinator: rec.coordinator,
        state: rec.outcome === "commit" ? "committed" : "rolled_back",
        writes: [],
        reads: [],
        preparedAt: p?.preparedAt,
        finishedAt: rec.at,
        ...(p?.resources?.length ? { resources: p.resources } : {}),
        ...defined({ incarnation: rec.incarnation ?? p?.incarnation, begunAt: rec.begun ?? p?.begunAt, vote: rec.vote ?? p?.vote, reason: rec.reason }),
      };
    }
  }
}

/** The fields of `o` that are set: a summary (or a peer message) carries no undefined fields (they would be stored, or sent). */
export function defined<T extends Record<string, unknown>>(o: T): Partial<T> {
  const out: Partial<T> = {};
  for (const k in o) if (o[k] !== undefined) out[k] = o[k];
  return out;
}

/** Store writes a record carries: a committed branch end, a store step (o.step) or a hosted store operation (b.op). */
export function recordKvWrites(rec: LogRecord): { writes: Write[]; version: number } | undefined {
  if (rec.r === "o.step" || rec.r === "b.op") return rec.writes?.length ? { writes: rec.writes, version: rec.version ?? 0 } : undefined;
  return rec.r === "p.end" && rec.outcome === "commit" && rec.writes.length ? { writes: rec.writes, version: rec.version } : undefined;
}
