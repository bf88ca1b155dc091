// The append-only journal: the sidecar's durability point. One group commit is
// one frame appended and one fdatasync, the same work as the floor `dtx bench`
// measures. LMDB (the index and the store) is written after it off the
// critical path; the journal only has to cover what LMDB has not yet made
// durable, so a file is deleted once LMDB's durable state has passed its end.
//
// The file is zero-filled ahead of the writes (preallocated, as PostgreSQL
// does its WAL segments): overwriting blocks that already exist lets
// fdatasync flush only data, not the file's size and block map as well.
//
// Frame: u32 payload length, u32 CRC-32 of the payload, payload =
// MessagePack [seq, records]. Reading stops at the first frame that is short
// or fails its CRC: that is the torn tail of a write no one was told was durable.
import { closeSync, fdatasync, fdatasyncSync, fsyncSync, openSync, readFileSync, readdirSync, unlinkSync, writeSync } from "node:fs";
import { join } from "node:path";
import { Packr } from "msgpackr";
import { valueCodec } from "../protocol/value.ts";
import type { LogRecord } from "./records.ts";

// The wire's codec options: records carry the values clients wrote, and they must read back the same.
const packr = new Packr(valueCodec);
const headerBytes = 8;
/** Start a new file once the current one holds this much; the old one goes when LMDB has caught up. */
export const journalFileBytesMax = 8 * 1024 * 1024;
/** Zero-fill this much ahead of the write position at a time. */
const preallocBytes = 1024 * 1024;
const zeros = Buffer.alloc(preallocBytes);
/** A frame longer than this is corrupt, not a batch (a group commit is far smaller). */
const frameBytesMax = 256 * 1024 * 1024;
const filePattern = /^journal-(\d+)\.log$/;

export interface JournalBatch {
  seq: number;
  records: LogRecord[];
}

interface SealedFile {
  path: string;
  lastSeq: number;
}

export class Journal {
  private fd!: number;
  private path!: string;
  private bytes = 0;
  private allocated = 0;
  private sealed: SealedFile[] = [];
  /** Started by the first syncAsync; null: it could not be started. */
  private syncer?: SyncThread | null;

  /** Opens a fresh file whose first batch will be `nextSeq`. Call after replaying and removing the old ones. */
  constructor(
    private readonly dir: string,
    nextSeq: number,
    private readonly fileBytesMax = journalFileBytesMax,
  ) {
    this.openFile(nextSeq);
  }

  private openFile(firstSeq: number): void {
    this.path = join(this.dir, `journal-${firstSeq}.log`);
    this.fd = openSync(this.path, "w");
    this.bytes = 0;
    this.allocated = 0;
    syncDir(this.dir);
  }

  /** Every valid batch in the directory's journal files, oldest first, and the files. */
  static read(dir: string): { batches: JournalBatch[]; files: string[] } {
    const files = readdirSync(dir)
      .map((f) => filePattern.exec(f))
      .filter((m): m is RegExpExecArray => m !== null)
      .sort((a, b) => Number(a[1]) - Number(b[1]))
      .map((m) => join(dir, m[0]));
    const batches: JournalBatch[] = [];
    for (const file of files) {
      const buf = readFileSync(file);
      for (let at = 0; at + headerBytes <= buf.length; ) {
        const len = buf.readUInt32BE(at);
        const end = at + headerBytes + len;
        if (len === 0 || len > frameBytesMax || end > buf.length) break;
        const payload = buf.subarray(at + headerBytes, end);
        if (Bun.hash.crc32(payload) !== buf.readUInt32BE(at + 4)) break;
        const [seq, records] = packr.unpack(payload) as [number, LogRecord[]];
        batches.push({ seq, records });
        at = end;
      }
    }
    return { batches, files };
  }

  /** Write one batch (not yet durable: call sync or syncAsync). */
  write(seq: number, records: LogRecord[]): void {
    const payload = packr.pack([seq, records]);
    const frame = Buffer.allocUnsafe(headerBytes + payload.length);
    frame.writeUInt32BE(payload.length, 0);
    frame.writeUInt32BE(Bun.hash.crc32(payload), 4);
    payload.copy(frame, headerBytes);
    // The zeros reach the disk with the next sync, so the file never ends in a half-allocated block.
    while (this.bytes + frame.length > this.allocated) {
      writeAll(this.fd, zeros, this.allocated);
      this.allocated += zeros.length;
    }
    writeAll(this.fd, frame, this.bytes);
    this.bytes += frame.length;
  }

  sync(): void {
    fdatasyncSync(this.fd);
  }

  /** fdatasync on the journal's own thread: the event loop goes on serving while the disk works. */
  syncAsync(): Promise<void> {
    if (this.syncer === undefined) {
      try {
        this.syncer = new SyncThread();
      } catch {
        this.syncer = null; // no thread to be had (a process limit, say): Bun's pool is slower, not less durable
      }
    }
    if (this.syncer) return this.syncer.fdatasync(this.fd);
    return new Promise((resolve, reject) => fdatasync(this.fd, (e) => (e ? reject(e) : resolve())));
  }

  /**
   * If the current file is full, seal it and start the next one. Only call
   * between group commits, when everything written so far is synced.
   */
  rotateIfFull(nextSeq: number): void {
    if (this.bytes < this.fileBytesMax) return;
    closeSync(this.fd);
    this.sealed.push({ path: this.path, lastSeq: nextSeq - 1 });
    this.openFile(nextSeq);
  }

  /** LMDB has made every batch up to `seq` durable: sealed files that end there are no longer needed. */
  release(seq: number): void {
    while (this.sealed.length && this.sealed[0].lastSeq <= seq) unlinkSync(this.sealed.shift()!.path);
  }

  /** Journal files on disk: the current one and those sealed but not yet released. */
  get files(): number {
    return this.sealed.length + 1;
  }

  /** Close (and stop the sync thread); with `everythingDurable` (LMDB holds all of it) the files are deleted. */
  close(everythingDurable: boolean): void {
    this.syncer?.stop();
    closeSync(this.fd);
    if (!everythingDurable) return;
    for (const f of this.sealed) unlinkSync(f.path);
    unlinkSync(this.path);
    this.sealed = [];
  }
}

function writeAll(fd: number, buf: Buffer, position: number): void {
  for (let at = 0; at < buf.length; ) at += writeSync(fd, buf, at, buf.length - at, position + at);
}

/** A new file's directory entry must be durable before the file's contents can count. */
export function syncDir(dir: string): void {
  const fd = openSync(dir, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

export function removeJournalFiles(files: string[]): void {
  for (const f of files) unlinkSync(f);
}

/**
 * One worker thread that runs fdatasync for the journal, one call at a time in
 * order. Bun's fs.fdatasync(fd, cb) goes through its shared pool and cost
 * ~0.30 ms a call here against ~0.15 ms for the call itself; a thread of our
 * own that answers by postMessage cost ~0.19 ms and ~17 µs of the event loop's
 * time (measured ad hoc; decisions.md, "Group commit"). It starts with the
 * first sync that needs it, so a sidecar that has done no work has no thread.
 */
export class SyncThread {
  private readonly worker: Worker;
  private readonly waiting: { resolve: () => void; reject: (e: unknown) => void }[] = [];
  /** Set once the thread is gone (it failed, or stop): later syncs are refused, never left waiting. */
  private gone?: Error;

  constructor() {
    const source = `const { fdatasyncSync } = require("node:fs");
self.onmessage = (e) => {
  try { fdatasyncSync(e.data); postMessage(null); }
  catch (x) { postMessage({ code: x && x.code, message: String((x && x.message) || x) }); }
};`;
    this.worker = new Worker(URL.createObjectURL(new Blob([source], { type: "application/javascript" })));
    this.worker.onmessage = (e: MessageEvent<{ code?: string; message: string } | null>) => {
      const w = this.waiting.shift();
      if (!w) return;
      if (e.data === null) return w.resolve();
      w.reject(Object.assign(new Error(`fdatasync on the journal failed: ${e.data.message}`), { code: e.data.code }));
    };
    this.worker.onerror = (e) => this.failAll(new Error(`the journal's sync thread failed: ${e.message}`));
    this.worker.unref();
  }

  fdatasync(fd: number): Promise<void> {
    if (this.gone) return Promise.reject(this.gone);
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      this.worker.postMessage(fd);
    });
  }

  stop(): void {
    this.worker.terminate();
    this.failAll(new Error("the journal was closed"));
  }

  private failAll(e: Error): void {
    this.gone ??= e;
    for (const w of this.waiting.splice(0)) w.reject(e);
  }
}
