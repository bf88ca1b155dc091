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
  /** Every participant of transactions named `name` this node hosted for an orchestrator (for status). */
  hostedOf(name: string): BarrierSummary[];
  list(opts: { state?: TxnState; limit?: number }): (CoordinatorSummary | OrchestrationSummary)[];
}

/** Hears how far the log is durable (the runtime: it waits on positions, not promises). */
export interface DurabilityWatcher {
  /** Everything up to `position` is durable. Positions only grow. */
  durable(position: number): void;
  /** The log cannot be written: nothing after the last durable position ever will be. */
  failed(err: unknown): void;
}

export interface Wal extends WalReader {
  /**
   * Append records atomically, after everything appended before, and return their position (appends are
   * numbered 1, 2, …): the watcher hears once the log is durable up to it.
   * `waited: false` says nothing is held back until they are (a hint for when to sync, never for whether).
   */
  write(records: LogRecord[], waited?: boolean): number;
  /** write, resolving once the records (and everything before them) are durable: for callers that are not the runtime. */
  append(records: LogRecord[], waited?: boolean): Promise<void>;
  /** Something now waits for `position`: records held back because nobody waited go now. */
  hurry?(position: number): void;
  /** The one watcher of durable positions (the runtime); a new one replaces the last. */
  watch(watcher: DurabilityWatcher): void;
  /** Resolves once everything appended so far is durable. */
  barrier(): Promise<void>;
  /** Summaries of every transaction and branch that is not finished, for recovery. */
  unfinished(): { coordinators: CoordinatorSummary[]; branches: BranchSummary[]; orchestrations: OrchestrationSummary[]; hosted: BarrierSummary[] };
  /** Forget finished transactions that finished before `before` (retention). Returns how many. */
  prune(before: number): number;
  close(): Promise<void>;
}
