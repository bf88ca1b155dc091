// In-memory Wal for the simulator and unit tests. Appends are visible at once
// (like an LMDB commit) but only durable after flush(), which tells the
// watcher (the runtime) at once, so whoever calls flush (the simulator)
// decides when effects may go; crash() drops the unflushed tail, exactly the
// failure the simulator must survive.
import type { TxnState } from "../protocol/messages.ts";
import { type IndexStore, type Summary, applyRecords, branchKey, coordinatorKey, filterHosted, filterList, filterUnfinished, isPrunable } from "./index-view.ts";
import { type BarrierSummary, type OrchestrationSummary, barrierKey, orchestrationKey } from "./orchestration-records.ts";
import type { BranchSummary, CoordinatorSummary, LogRecord } from "./records.ts";
import type { DurabilityWatcher, KvEntry, Wal } from "./wal.ts";

class MapStore implements IndexStore {
  index = new Map<string, Summary>();
  kv = new Map<string, KvEntry>();
  version = 0;
  getSummary(key: string) {
    return this.index.get(key);
  }
  putSummary(key: string, s: Summary) {
    this.index.set(key, s);
  }
  getKv(key: string) {
    return this.kv.get(key);
  }
  putKv(key: string, e: KvEntry | undefined) {
    if (e) this.kv.set(key, e);
    else this.kv.delete(key);
  }
  putKvVersion(v: number) {
    if (v > this.version) this.version = v;
  }
  clone(): MapStore {
    const c = new MapStore();
    c.index = new Map(this.index);
    c.kv = new Map(this.kv);
    c.version = this.version;
    return c;
  }
}

export class MemoryWal implements Wal {
  private durable = new MapStore();
  private view = new MapStore();
  private pending: LogRecord[][] = [];
  private waiters: Array<{ upTo: number; resolve: () => void }> = [];
  private watcher?: DurabilityWatcher;
  /** The position of the last append, and of the last one made durable. */
  appended = 0;
  flushedUpTo = 0;

  /** autoFlush: every append is durable at once (unit tests); off for the simulator. */
  constructor(private readonly autoFlush = true) {}

  write(records: LogRecord[]): number {
    applyRecords(this.view, records);
    this.pending.push(records);
    const position = ++this.appended;
    if (this.autoFlush) this.flush();
    return position;
  }

  append(records: LogRecord[]): Promise<void> {
    return this.waitFor(this.write(records));
  }

  watch(watcher: DurabilityWatcher): void {
    this.watcher = watcher;
  }

  barrier(): Promise<void> {
    return this.waitFor(this.appended);
  }

  private waitFor(pos: number): Promise<void> {
    if (pos <= this.flushedUpTo) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ upTo: pos, resolve }));
  }

  /** Make every pending append durable; the watcher hears first, then whoever awaits append or barrier. */
  flush(): void {
    if (this.flushedUpTo === this.appended) return;
    for (const recs of this.pending) applyRecords(this.durable, recs);
    this.pending = [];
    this.flushedUpTo = this.appended;
    this.watcher?.durable(this.flushedUpTo);
    if (!this.waiters.length) return;
    const ready = this.waiters.filter((w) => w.upTo <= this.flushedUpTo);
    this.waiters = this.waiters.filter((w) => w.upTo > this.flushedUpTo);
    for (const w of ready) w.resolve();
  }

  /** Lose everything not yet flushed, as a power cut would. */
  crash(): void {
    this.pending = [];
    this.view = this.durable.clone();
    this.appended = this.flushedUpTo;
    this.waiters = [];
  }

  get pendingCount(): number {
    return this.pending.length;
  }

  /** The records a crash now would lose, in order. */
  unflushed(): LogRecord[] {
    return this.pending.flat();
  }

  /** The highest store version durable so far. */
  durableKvVersion(): number {
    return this.durable.version;
  }

  kvGet(key: string) {
    return this.view.getKv(key);
  }
  kvVersion() {
    return this.view.version;
  }
  coordinator(name: string) {
    return this.view.getSummary(coordinatorKey(name)) as CoordinatorSummary | undefined;
  }
  branch(name: string, branch: string) {
    return this.view.getSummary(branchKey(name, branch)) as BranchSummary | undefined;
  }
  branchesOf(name: string): BranchSummary[] {
    const prefix = branchKey(name, "");
    return [...this.view.index].filter(([k]) => k.startsWith(prefix)).map(([, s]) => s as BranchSummary);
  }
  orchestration(name: string) {
    return this.view.getSummary(orchestrationKey(name)) as OrchestrationSummary | undefined;
  }
  barrierEntry(key: string) {
    return this.view.getSummary(barrierKey(key)) as BarrierSummary | undefined;
  }
  hostedOf(name: string): BarrierSummary[] {
    const prefix = barrierKey(`${name}/`);
    return filterHosted([...this.view.index].filter(([k]) => k.startsWith(prefix)));
  }
  list(opts: { state?: TxnState; limit?: number }) {
    return filterList(this.view.index, opts);
  }
  unfinished() {
    return filterUnfinished(this.view.index);
  }
  /** Durable summaries only: what a restarted node would see. */
  durableSummaries(): ReadonlyMap<string, Summary> {
    return this.durable.index;
  }
  prune(before: number): number {
    let n = 0;
    for (const [k, s] of this.view.index) {
      if (isPrunable(s, before)) {
        this.view.index.delete(k);
        this.durable.index.delete(k);
        n++;
      }
    }
    return n;
  }
  async close() {}
}
