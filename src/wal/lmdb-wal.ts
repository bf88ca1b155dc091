// The sidecar's durable log over LMDB. One LMDB environment holds three
// databases: the transaction index (summaries folded from log records), the
// built-in key-value store, and meta.
//
// Group commit: every append made during one event-loop turn waits, and at
// the end of the turn all of them are written in ONE synchronous LMDB write
// transaction, which LMDB makes durable (fsync) before it returns
// (overlappingSync is off, so a commit's return means on disk, not just
// visible). Then every waiting append resolves. One fsync per turn however many
// transactions took part; a synchronous commit also avoids lmdb-js's hand-off
// to its write thread, which costs more than the fsync itself here.
import { open, type Database, type RootDatabase } from "lmdb";
import type { TxnState } from "../protocol/messages.ts";
import { type IndexStore, type Summary, applyRecords, branchKey, coordinatorKey, filterList, filterUnfinished, isPrunable } from "./index-view.ts";
import { type BarrierSummary, type OrchestrationSummary, barrierKey, orchestrationKey } from "./orchestration-records.ts";
import type { BranchSummary, CoordinatorSummary, LogRecord } from "./records.ts";
import type { KvEntry, Wal } from "./wal.ts";

/** Batches of at most this many appends commit synchronously (see commitBatch). */
const syncBatchMax = 4;

interface StoredKv {
  v: unknown;
  ver: number;
}

export interface LmdbWalStats {
  appends: number;
  records: number;
  /** Distinct fsyncs; appends / flushes is the group-commit batch size. */
  flushes: number;
}

export class LmdbWal implements Wal {
  private env: RootDatabase;
  private index: Database<Summary, string>;
  private kv: Database<StoredKv, string>;
  private meta: Database<number, string>;
  private version: number;
  private lastFlush: Promise<void> = Promise.resolve();
  private committing = false;
  private batch?: { records: LogRecord[][]; appends: number; done: Promise<void>; resolve: () => void; reject: (e: unknown) => void };
  readonly stats: LmdbWalStats = { appends: 0, records: 0, flushes: 0 };
  /** Called with how long each group commit (write + fsync) took and how many appends it covered, for metrics. */
  onFlush?: (ms: number, appends: number) => void;

  constructor(path: string) {
    this.env = open({ path, compression: false, maxDbs: 8, overlappingSync: false });
    // Plain MessagePack maps (no shared record structures): half the encoding cost on every put.
    this.index = this.env.openDB<Summary, string>({ name: "index", encoder: { useRecords: false } } as never);
    this.kv = this.env.openDB<StoredKv, string>({ name: "kv", encoder: { useRecords: false } } as never);
    this.meta = this.env.openDB<number, string>({ name: "meta" });
    this.version = this.meta.get("kvVersion") ?? 0;
  }

  private readonly store: IndexStore = {
    getSummary: (key) => this.index.get(key),
    putSummary: (key, s) => void this.index.put(key, s),
    getKv: (key) => {
      const e = this.kv.get(key);
      return e ? { value: e.v, version: e.ver } : undefined;
    },
    putKv: (key, e) => void (e ? this.kv.put(key, { v: e.value, ver: e.version }) : this.kv.remove(key)),
    putKvVersion: (v) => {
      if (v > this.version) this.version = v;
      void this.meta.put("kvVersion", this.version);
    },
  };

  append(records: LogRecord[]): Promise<void> {
    this.stats.appends++;
    this.stats.records += records.length;
    if (!this.batch) {
      let resolve!: () => void;
      let reject!: (e: unknown) => void;
      const done = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      this.batch = { records: [], appends: 0, done, resolve, reject };
      if (!this.committing) setImmediate(() => this.commitBatch());
    }
    this.batch.records.push(records);
    this.batch.appends++;
    this.lastFlush = this.batch.done;
    return this.batch.done;
  }

  barrier(): Promise<void> {
    return this.batch?.done ?? this.lastFlush;
  }

  /**
   * Commit what the turn gathered. A small batch commits synchronously: lowest
   * latency, the fsync blocks this thread briefly. A larger one (there is load)
   * commits on lmdb-js's write thread so this thread keeps working; while it is
   * in flight the next batch gathers, and it follows as soon as this one is
   * durable. One commit at a time keeps the log in order.
   */
  private commitBatch(): void {
    const b = this.batch;
    if (!b || this.committing) return;
    this.batch = undefined;
    const started = performance.now();
    const apply = () => applyRecords(this.store, b.records.flat());
    const finished = () => {
      this.stats.flushes++;
      this.onFlush?.(performance.now() - started, b.appends);
      b.resolve();
    };
    if (b.appends <= syncBatchMax) {
      try {
        this.env.transactionSync(apply);
      } catch (e) {
        return b.reject(e);
      }
      return finished();
    }
    this.committing = true;
    this.env
      .transaction(apply)
      .then(() => this.env.flushed)
      .then(finished, (e) => b.reject(e))
      .finally(() => {
        this.committing = false;
        if (this.batch) this.commitBatch();
      });
  }

  kvGet(key: string): KvEntry | undefined {
    return this.store.getKv(key);
  }
  kvVersion(): number {
    return this.version;
  }
  coordinator(name: string) {
    return this.index.get(coordinatorKey(name)) as CoordinatorSummary | undefined;
  }
  branch(name: string, branch: string) {
    return this.index.get(branchKey(name, branch)) as BranchSummary | undefined;
  }
  private *entries(prefix?: string): Iterable<[string, Summary]> {
    const range = prefix ? this.index.getRange({ start: prefix, end: prefix + "\uffff" }) : this.index.getRange();
    for (const { key, value } of range) yield [key, value];
  }
  orchestration(name: string) {
    return this.index.get(orchestrationKey(name)) as OrchestrationSummary | undefined;
  }
  barrierEntry(key: string) {
    return this.index.get(barrierKey(key)) as BarrierSummary | undefined;
  }
  list(opts: { state?: TxnState; limit?: number }) {
    const limit = opts.limit ?? 1000;
    const plain = filterList(this.entries("c/"), { ...opts, limit });
    return plain.length >= limit ? plain : [...plain, ...filterList(this.entries("o/"), { ...opts, limit: limit - plain.length })];
  }
  unfinished() {
    return filterUnfinished(this.entries());
  }
  prune(before: number): number {
    const doomed: string[] = [];
    for (const [k, s] of this.entries()) if (isPrunable(s, before)) doomed.push(k);
    if (doomed.length) this.env.transactionSync(() => doomed.forEach((k) => this.index.removeSync(k)));
    return doomed.length;
  }
  async close(): Promise<void> {
    await this.lastFlush;
    await this.env.close();
  }
}
