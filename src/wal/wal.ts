// The durable log + transaction index + store, behind one interface with
// an LMDB implementation (sidecar) and an in-memory one (simulator, unit tests).
import type { TxnState } from "../protocol/messages.ts";
import type { BarrierSummary, OrchestrationSummary } from "./orchestration-records.ts";
import type { BranchSummary, CoordinatorSummary, LogRecord } from "./records.ts";

export interface KvEntry {
  value: unknown;
  version: number;
}

/** Reads of durable (or committed-but-unflushed) state. Deterministic given the log. */
export interface WalReader {
  kvGet(key: string): KvEntry | undefined;
  /** The highest store version ever committed. */
  kvVersion(): number;
  coordinator(name: string): CoordinatorSummary | undefined;
  branch(name: string, branch: string): BranchSummary | undefined;
  /** Every branch of transactions named `name` that this node logged (for status). */
  branchesOf(name: string): BranchSummary[];
  orchestration(name: string): OrchestrationSummary | undefined;
  barrierEntry(key: string): BarrierSummary | undefined;
  list(opts: { state?: TxnState; limit?: number }): (CoordinatorSummary | OrchestrationSummary)[];
}

export interface Wal extends WalReader {
  /**
   * Append records atomically. Resolves once they, and everything appended before, are durable.
   * `waited: false` says nothing is held back until they are (a hint for when to sync, never for whether).
   */
  append(records: LogRecord[], waited?: boolean): Promise<void>;
  /** Something now waits for `durable` (an append's promise): records held back because nobody waited go now. */
  hurry?(durable: Promise<void>): void;
  /** Resolves once everything appended so far is durable. */
  barrier(): Promise<void>;
  /** Summaries of every transaction and branch that is not finished, for recovery. */
  unfinished(): { coordinators: CoordinatorSummary[]; branches: BranchSummary[]; orchestrations: OrchestrationSummary[] };
  /** Forget finished transactions that finished before `before` (retention). Returns how many. */
  prune(before: number): number;
  close(): Promise<void>;
}
