// The sidecar's durable log over LMDB. One LMDB environment holds three
// databases: the transaction index (summaries folded from log records), the
// built-in key-value store, and meta. Each append is one atomic LMDB write
// transaction; appends issued in the same turn share one commit and one fsync
// (lmdb-js batches them), which is our group commit. A write promise in
// lmdb-js means committed, not durable, so append also awaits env.flushed.
import { open, type Database, type RootDatabase } from "lmdb";
import type { TxnState } from "../protocol/messages.ts";
import { type IndexStore, type Summary, applyRecords, branchKey, coordinatorKey, filterList, filterUnfinished, isPrunable } from "./index-view.ts";
import { type BarrierSummary, type OrchestrationSummary, barrierKey, orchestrationKey } from "./orchestration-records.ts";
import type { BranchSummary, CoordinatorSummary, LogRecord } from "./records.ts";
import type { KvEntry, Wal } from "./wal.ts";

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
  private seenFlushes = new WeakSet<Promise<void>>();
  readonly stats: LmdbWalStats = { appends: 0, records: 0, flushes: 0 };
  /** Called with how long each flush (fsync) took and how many appends it covered, for metrics. */
  onFlush?: (ms: number, appends: number) => void;
  private appendsSinceFlush = 0;

  constructor(path: string) {
    this.env = open({ path, compression: false, maxDbs: 8 });
    this.index = this.env.openDB<Summary, string>({ name: "index" });
    this.kv = this.env.openDB<StoredKv, string>({ name: "kv" });
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
    this.appendsSinceFlush++;
    this.stats.records += records.length;
    const committed = this.env.transaction(() => applyRecords(this.store, records));
    return committed.then(() => this.flushed());
  }

  barrier(): Promise<void> {
    return this.flushed();
  }

  // Every commit before a flush shares it: count each flush once (group commit).
  private flushed(): Promise<void> {
    const f = this.env.flushed as unknown as Promise<void>;
    if (!this.seenFlushes.has(f)) {
      this.seenFlushes.add(f);
      this.stats.flushes++;
      const started = performance.now();
      const appends = this.appendsSinceFlush;
      this.appendsSinceFlush = 0;
      void f.then(() => this.onFlush?.(performance.now() - started, appends));
    }
    this.lastFlush = f;
    return f;
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
    if (doomed.length) void this.env.transaction(() => doomed.forEach((k) => this.index.remove(k)));
    return doomed.length;
  }
  async close(): Promise<void> {
    await this.lastFlush;
    await this.env.close();
  }
}
