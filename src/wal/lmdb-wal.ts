// The sidecar's durable log: an append-only journal in front of LMDB. One
// LMDB environment holds the transaction index (summaries folded from log
// records), the built-in key-value store, and meta.
//
// Group commit: every append made during one event-loop turn waits; at the
// end of the turn the batch is folded into an in-memory overlay (so reads see
// it at once), written to the journal as one frame and made durable with one
// fdatasync. Then every waiting append resolves. The same batch is written to
// LMDB in a transaction on lmdb-js's write thread, with the batch's sequence
// number in meta; when that commit is durable the overlay entries it covered
// are dropped and journal files it covered are deleted. A durable step thus
// costs one small append + fdatasync, where an LMDB commit costs two syncs
// (data, then meta pages); LMDB's own durability is never relaxed, so a crash
// of any kind leaves it consistent at some batch, and start-up replays the
// journal's batches after it.
import { mkdirSync } from "node:fs";
import { open, type Database, type RootDatabase } from "lmdb";
import type { TxnState } from "../protocol/messages.ts";
import { type IndexStore, type Summary, applyRecords, branchKey, coordinatorKey, filterHosted, filterList, filterUnfinished, isPrunable } from "./index-view.ts";
import { valueCodec } from "../protocol/value.ts";
import { Journal, removeJournalFiles } from "./journal.ts";
import { type BarrierSummary, type OrchestrationSummary, barrierKey, orchestrationKey } from "./orchestration-records.ts";
import type { BranchSummary, CoordinatorSummary, LogRecord } from "./records.ts";
import type { DurabilityWatcher, KvEntry, Wal } from "./wal.ts";

/**
 * Durable batches reach LMDB at most this often, merged into one write
 * transaction. LMDB's own fsyncs then stay rare and seldom delay a journal
 * fdatasync on the same disk, and a summary written several times in the
 * window is written once. A commit copies every B-tree page it touches, and
 * names that grow (order-1041, order-1042, …) land on the same few leaves, so
 * a longer window writes about as many pages for more transactions: 300 ms
 * against 100 ms was ~30% more local throughput at concurrency 256, with the
 * same p99 (1000 ms: no more throughput, p99 up by half).
 */
const checkpointMs = 300;

/** A batch of at most this many appends, after another such batch, syncs on the event-loop thread (see commitBatch). */
const inlineSyncAppendsMax = 4;

/**
 * A batch nobody waits for (a transaction's c.end, whose reply has gone) is held back this long, so it
 * rides with the next batch's sync instead of taking one of its own just before it; whoever starts
 * waiting for it (Wal.hurry, with its position) sends it at once.
 */
const unwaitedHoldMs = 5;

interface StoredKv {
  v: unknown;
  ver: number;
}

/** What one batch changes in LMDB. A null kv entry is a delete. */
interface LmdbWrites {
  seq: number;
  version: number;
  index: Map<string, Summary>;
  kv: Map<string, StoredKv | null>;
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
  private journal: Journal;
  private version: number;
  private seq: number;
  /** Applied and journaled, not yet committed to LMDB: reads look here first. null: pruned. */
  private pendingIndex = new Map<string, Summary | null>();
  private pendingKv = new Map<string, StoredKv | null>();
  private lastFlush: Promise<void> = Promise.resolve();
  private lastLmdbWrite: Promise<unknown> = Promise.resolve();
  /** Durable batches waiting for the next checkpoint, merged. */
  private unwritten?: LmdbWrites;
  private checkpointTimer?: ReturnType<typeof setTimeout>;
  private failure?: unknown;
  private syncing = false;
  private lastBatchAppends = 0;
  /** The position of the last append (appends are numbered from 1). */
  private position = 0;
  private watcher?: DurabilityWatcher;
  private batch?: {
    records: LogRecord[][];
    appends: number;
    /** The positions of its first and last appends. */
    first: number;
    last: number;
    waited: boolean;
    /** The commit is scheduled: at once (setImmediate), or held (a timer) while nobody waits. */
    scheduled?: "now" | ReturnType<typeof setTimeout>;
    done: Promise<void>;
    resolve: () => void;
    reject: (e: unknown) => void;
  };
  readonly stats: LmdbWalStats = { appends: 0, records: 0, flushes: 0 };
  /** Journal files on disk now (for tests and metrics). */
  get journalFiles(): number {
    return this.journal.files;
  }
  /** Called with how long each group commit (write + fsync) took and how many appends it covered, for metrics. */
  onFlush?: (ms: number, appends: number) => void;

  constructor(path: string, opts: { journalFileBytesMax?: number } = {}) {
    mkdirSync(path, { recursive: true });
    this.env = open({ path, compression: false, maxDbs: 8, overlappingSync: false });
    // The wire's codec options (value.ts), so a stored value reads back as it was written; they keep
    // plain MessagePack maps (no shared record structures): half the encoding cost on every put. Data
    // written before BigInt support reads the same: it never held int64.
    this.index = this.env.openDB<Summary, string>({ name: "index", encoder: { ...valueCodec } } as never);
    this.kv = this.env.openDB<StoredKv, string>({ name: "kv", encoder: { ...valueCodec } } as never);
    this.meta = this.env.openDB<number, string>({ name: "meta" });
    this.version = this.meta.get("kvVersion") ?? 0;
    this.seq = this.replayJournal(path);
    this.journal = new Journal(path, this.seq + 1, opts.journalFileBytesMax);
  }

  /** Bring LMDB up to the journal's last durable batch (one synchronous, durable commit); then the old files go. */
  private replayJournal(path: string): number {
    const applied = this.meta.get("journalSeq") ?? 0;
    const { batches, files } = Journal.read(path);
    const missing = batches.filter((b) => b.seq > applied);
    if (missing.length) {
      const direct: IndexStore = {
        getSummary: (key) => this.index.get(key),
        putSummary: (key, s) => void this.index.put(key, s),
        getKv: (key) => this.readKv(key),
        putKv: (key, e) => void (e ? this.kv.put(key, { v: e.value, ver: e.version }) : this.kv.remove(key)),
        putKvVersion: (v) => void (v > this.version && (this.version = v)),
      };
      this.env.transactionSync(() => {
        for (const b of missing) applyRecords(direct, b.records);
        this.meta.put("kvVersion", this.version);
        this.meta.put("journalSeq", missing[missing.length - 1].seq);
      });
    }
    removeJournalFiles(files);
    return Math.max(applied, batches.length ? batches[batches.length - 1].seq : 0);
  }

  private readKv(key: string): KvEntry | undefined {
    const e = this.pendingKv.has(key) ? this.pendingKv.get(key) : this.kv.get(key);
    return e ? { value: e.v, version: e.ver } : undefined;
  }

  /** The fold's view for one batch: reads through the overlay, writes into it and into `w`. */
  private overlayStore(w: LmdbWrites): IndexStore {
    return {
      getSummary: (key) => this.summary(key),
      putSummary: (key, s) => {
        this.pendingIndex.set(key, s);
        w.index.set(key, s);
      },
      getKv: (key) => this.readKv(key),
      putKv: (key, e) => {
        const stored = e ? { v: e.value, ver: e.version } : null;
        this.pendingKv.set(key, stored);
        w.kv.set(key, stored);
      },
      putKvVersion: (v) => {
        if (v > this.version) this.version = v;
      },
    };
  }

  write(records: LogRecord[], waited = true): number {
    if (this.failure) {
      // Never durable: the position is past every batch that may still finish.
      this.watcher?.failed(this.failure);
      return ++this.position;
    }
    this.stats.appends++;
    this.stats.records += records.length;
    const position = ++this.position;
    if (!this.batch) {
      let resolve!: () => void;
      let reject!: (e: unknown) => void;
      const done = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      this.batch = { records: [], appends: 0, first: position, last: position, waited: false, done, resolve, reject };
    }
    this.batch.records.push(records);
    this.batch.appends++;
    this.batch.last = position;
    this.batch.waited ||= waited;
    this.lastFlush = this.batch.done;
    this.schedule();
    return position;
  }

  append(records: LogRecord[], waited = true): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    this.write(records, waited);
    return this.lastFlush;
  }

  watch(watcher: DurabilityWatcher): void {
    this.watcher = watcher;
  }

  hurry(position: number): void {
    const b = this.batch;
    if (!b || position < b.first || b.waited) return;
    b.waited = true;
    this.schedule();
  }

  barrier(): Promise<void> {
    if (this.batch) this.hurry(this.batch.last);
    return this.batch?.done ?? this.lastFlush;
  }

  /** Commit the gathering batch at the end of this turn, or after unwaitedHoldMs if nobody waits for it; while a sync runs, its end commits it. */
  private schedule(): void {
    const b = this.batch;
    if (!b || this.syncing || b.scheduled === "now") return;
    if (b.waited) {
      clearTimeout(b.scheduled);
      b.scheduled = "now";
      setImmediate(() => this.commitBatch());
    } else b.scheduled ??= setTimeout(() => this.commitBatch(), unwaitedHoldMs);
  }

  /**
   * Commit what the turn gathered: write it to the journal, then fdatasync.
   * Under load the sync runs on the journal's sync thread so this one keeps
   * serving requests; meanwhile the next batch gathers and follows as soon as
   * this one is durable. One sync at a time keeps the journal in order. A
   * small batch after a small batch means the sidecar is nearly idle: if
   * something waits for it, it syncs on this thread, which saves the
   * hand-off (~0.04 ms a sync here); a batch nobody waits for (a
   * transaction's last record, say) still syncs on the sync thread, so the
   * next request is not held up behind it. (Syncing every batch on this
   * thread cost 20–35% of throughput under load, where the blocked thread
   * could not gather.)
   */
  private commitBatch(): void {
    const b = this.batch;
    if (!b || this.syncing) return;
    if (b.scheduled !== "now") clearTimeout(b.scheduled);
    this.batch = undefined;
    const started = performance.now();
    const records = b.records.length === 1 ? b.records[0] : b.records.flat();
    const seq = this.seq + 1;
    try {
      this.journal.rotateIfFull(seq);
      this.journal.write(seq, records);
    } catch (e) {
      // Later batches must not report positions past this one durable: the log stops here (the runtime exits).
      this.failure ??= e;
      this.watcher?.failed(e);
      return b.reject(e);
    }
    this.seq = seq;
    const finished = () => {
      this.stats.flushes++;
      this.onFlush?.(performance.now() - started, b.appends);
      this.queueForLmdb(writes);
      // The watcher first: the runtime's effects are queued ahead of whoever awaits append or barrier (drain).
      this.watcher?.durable(b.last);
      b.resolve();
    };
    // A failed fdatasync leaves the batch's durability unknown (and the overlay holding it): no further appends.
    const failed = (e: unknown) => {
      this.failure ??= e;
      this.watcher?.failed(e);
      b.reject(e);
    };
    const writes: LmdbWrites = { seq, version: 0, index: new Map(), kv: new Map() };
    const fold = () => {
      applyRecords(this.overlayStore(writes), records);
      writes.version = this.version;
    };
    const quiet = b.waited && b.appends <= inlineSyncAppendsMax && this.lastBatchAppends <= inlineSyncAppendsMax;
    this.lastBatchAppends = b.appends;
    if (quiet) {
      try {
        this.journal.sync();
      } catch (e) {
        return failed(e);
      }
      fold();
      return finished();
    }
    this.syncing = true;
    const synced = this.journal.syncAsync();
    // Fold into the overlay while the fdatasync runs: reads need it only once the batch is durable and acknowledged.
    fold();
    synced.then(finished, failed).finally(() => {
      this.syncing = false;
      if (this.batch?.waited) this.commitBatch();
      else this.schedule();
    });
  }

  private queueForLmdb(w: LmdbWrites): void {
    if (!this.unwritten) this.unwritten = w;
    else {
      const u = this.unwritten;
      for (const [k, s] of w.index) u.index.set(k, s);
      for (const [k, e] of w.kv) u.kv.set(k, e);
      u.seq = w.seq;
      u.version = w.version;
    }
    this.checkpointTimer ??= setTimeout(() => this.checkpoint(), checkpointMs);
  }

  /** Hand everything durable so far to LMDB in one transaction. */
  private checkpoint(): void {
    clearTimeout(this.checkpointTimer);
    this.checkpointTimer = undefined;
    const w = this.unwritten;
    this.unwritten = undefined;
    if (w) this.writeLmdb(w);
  }

  /** Write durable batches to LMDB (lmdb-js's write thread), then drop what the overlay no longer needs. */
  private writeLmdb(w: LmdbWrites): void {
    // batch, not transaction: the puts run on lmdb-js's write thread, still in one LMDB transaction.
    this.lastLmdbWrite = this.env
      .batch(() => {
        for (const [k, s] of w.index) this.index.put(k, s);
        for (const [k, e] of w.kv) e ? this.kv.put(k, e) : this.kv.remove(k);
        this.meta.put("kvVersion", w.version);
        this.meta.put("journalSeq", w.seq);
      })
      .then(() => {
        for (const [k, s] of w.index) if (this.pendingIndex.get(k) === s) this.pendingIndex.delete(k);
        for (const [k, e] of w.kv) if (this.pendingKv.get(k) === e) this.pendingKv.delete(k);
        return this.env.flushed;
      })
      .then(
        () => this.journal.release(w.seq),
        (e) => {
          // The journal still holds the batch and the overlay still answers reads; refuse new work rather than go on half-written.
          this.failure ??= e;
        },
      );
  }

  kvGet(key: string): KvEntry | undefined {
    return this.readKv(key);
  }
  kvVersion(): number {
    return this.version;
  }
  private summary(key: string): Summary | undefined {
    const p = this.pendingIndex.get(key);
    return p !== undefined ? (p ?? undefined) : this.index.get(key);
  }
  coordinator(name: string) {
    return this.summary(coordinatorKey(name)) as CoordinatorSummary | undefined;
  }
  branch(name: string, branch: string) {
    return this.summary(branchKey(name, branch)) as BranchSummary | undefined;
  }
  branchesOf(name: string): BranchSummary[] {
    return [...this.entries(branchKey(name, ""))].map(([, s]) => s as BranchSummary);
  }
  /** LMDB's entries with the overlay laid over them (overlay-only keys last). */
  private *entries(prefix = ""): Iterable<[string, Summary]> {
    const pending = new Map([...this.pendingIndex].filter(([k]) => k.startsWith(prefix)));
    const range = prefix ? this.index.getRange({ start: prefix, end: prefix + "\uffff" }) : this.index.getRange();
    for (const { key, value } of range) {
      const p = pending.get(key);
      pending.delete(key);
      if (p !== null) yield [key, p ?? value];
    }
    for (const [k, p] of pending) if (p) yield [k, p];
  }
  orchestration(name: string) {
    return this.summary(orchestrationKey(name)) as OrchestrationSummary | undefined;
  }
  barrierEntry(key: string) {
    return this.summary(barrierKey(key)) as BarrierSummary | undefined;
  }
  hostedOf(name: string): BarrierSummary[] {
    return filterHosted(this.entries(barrierKey(`${name}/`)));
  }
  list(opts: { state?: TxnState; limit?: number }) {
    const limit = opts.limit ?? 1000;
    const plain = filterList(this.entries("c/"), { ...opts, limit });
    return plain.length >= limit ? plain : [...plain, ...filterList(this.entries("o/"), { ...opts, limit: limit - plain.length })];
  }
  unfinished() {
    return filterUnfinished(this.entries());
  }
  /**
   * Deletes go through the overlay (as tombstones) and LMDB's write queue, so
   * they land after every batch before them. Not journaled: a crash before
   * they commit only means the same entries are pruned again later.
   */
  prune(before: number): number {
    const doomed: string[] = [];
    for (const [k, s] of this.entries()) if (isPrunable(s, before)) doomed.push(k);
    if (!doomed.length) return 0;
    for (const k of doomed) this.pendingIndex.set(k, null);
    this.lastLmdbWrite = this.env
      .batch(() => doomed.forEach((k) => this.index.remove(k)))
      .then(() => doomed.forEach((k) => this.pendingIndex.get(k) === null && this.pendingIndex.delete(k)));
    return doomed.length;
  }
  async close(): Promise<void> {
    await this.barrier();
    this.checkpoint();
    await this.lastLmdbWrite;
    await this.env.flushed;
    this.journal.close(!this.failure);
    await this.env.close();
  }
}
