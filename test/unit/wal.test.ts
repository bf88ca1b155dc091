// One suite for the Wal interface, run against every implementation.
import { afterAll, describe, expect, test } from "bun:test";
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Journal, SyncThread } from "../../src/wal/journal.ts";
import { LmdbWal } from "../../src/wal/lmdb-wal.ts";
import { MemoryWal } from "../../src/wal/memory-wal.ts";
import type { LogRecord } from "../../src/wal/records.ts";
import type { Wal } from "../../src/wal/wal.ts";
import { tempDir, waitFor } from "../helpers/sidecar-process.ts";

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

const implementations: [string, () => Wal][] = [
  ["memory", () => new MemoryWal(true)],
  [
    "lmdb",
    () => {
      const d = tempDir("dtx-wal-");
      dirs.push(d);
      return new LmdbWal(join(d, "wal"));
    },
  ],
];

const branches = [{ id: "A.x.1", sidecar: "A" }];
const prepared = (name: string): LogRecord => ({ r: "p.prepared", name, branch: "A.x.1", coordinator: "A", writes: [["k", 1, false]], reads: ["k"], at: 1 });

for (const [kind, make] of implementations) {
  describe(`Wal (${kind})`, () => {
    test("records fold into summaries; unfinished lists what recovery must resume", async () => {
      const wal = make();
      await wal.append([{ r: "c.prepared", name: "t1", protocol: "2pc", branches, createdAt: 1, at: 2 }, prepared("t1")]);
      expect(wal.coordinator("t1")?.state).toBe("prepared");
      expect(wal.branch("t1", "A.x.1")?.writes).toEqual([["k", 1, false]]);
      const u = wal.unfinished();
      expect(u.coordinators.map((c) => c.name)).toEqual(["t1"]);
      expect(u.branches.map((b) => b.name)).toEqual(["t1"]);
      await wal.close();
    });

    test("write numbers the appends, and the watcher hears them durable in order before append resolves", async () => {
      const wal = make();
      const heard: number[] = [];
      wal.watch({ durable: (position) => heard.push(position), failed: (err) => expect(err).toBeUndefined() });
      const first = wal.write([prepared("w1")]);
      expect(wal.write([prepared("w2")])).toBe(first + 1);
      await wal.append([prepared("w3")]);
      expect(heard.at(-1)).toBe(first + 2);
      expect(heard).toEqual([...new Set(heard)].sort((a, b) => a - b));
      await wal.close();
    });

    test("a committed branch end applies its writes to the store atomically with the record", async () => {
      const wal = make();
      await wal.append([prepared("t2")]);
      await wal.append([
        { r: "c.decision", name: "t2", protocol: "2pc", outcome: "commit", branches, createdAt: 1, at: 3 },
        { r: "p.end", name: "t2", branch: "A.x.1", coordinator: "A", outcome: "commit", writes: [["k", "v", false], ["gone", null, true]], version: 7, at: 4 },
        { r: "c.end", name: "t2", protocol: "2pc", outcome: "commit", branches, createdAt: 1, at: 5 },
      ]);
      expect(wal.kvGet("k")).toEqual({ value: "v", version: 7 });
      expect(wal.kvGet("gone")).toBeUndefined();
      expect(wal.kvVersion()).toBe(7);
      expect(wal.coordinator("t2")?.state).toBe("committed");
      expect(wal.unfinished().branches.find((b) => b.name === "t2")).toBeUndefined();
      expect(wal.list({ state: "committed" }).map((s) => s.name)).toContain("t2");
      await wal.close();
    });

    test("prune forgets finished transactions older than the retention cut-off", async () => {
      const wal = make();
      await wal.append([{ r: "c.end", name: "old", protocol: "2pc", outcome: "rollback", branches, createdAt: 1, at: 10 }]);
      await wal.append([{ r: "c.end", name: "new", protocol: "2pc", outcome: "rollback", branches, createdAt: 1, at: 1000 }]);
      expect(wal.prune(500)).toBe(1);
      await wal.barrier();
      expect(wal.coordinator("old")).toBeUndefined();
      expect(wal.coordinator("new")?.state).toBe("rolled_back");
      await wal.close();
    });
  });
}

test("LMDB: concurrent appends share fsyncs (group commit) and all are durable", async () => {
  const d = tempDir("dtx-wal-");
  dirs.push(d);
  let wal = new LmdbWal(join(d, "wal"));
  await Promise.all(Array.from({ length: 200 }, (_, i) => wal.append([{ r: "c.end", name: `g${i}`, protocol: "2pc", outcome: "commit", branches, createdAt: 1, at: 2 }])));
  expect(wal.stats.appends).toBe(200);
  expect(wal.stats.flushes).toBeLessThan(20);
  console.log(`200 concurrent appends -> ${wal.stats.flushes} fsyncs`);
  await wal.close();
  wal = new LmdbWal(join(d, "wal"));
  expect(wal.list({ limit: 1000 }).length).toBe(200);
  await wal.close();
});

test("LMDB: records nobody waits for ride with the next batch's sync, or go once someone waits for them", async () => {
  const d = tempDir("dtx-wal-");
  dirs.push(d);
  const wal = new LmdbWal(join(d, "wal"));
  const end = (name: string): LogRecord => ({ r: "c.end", name, protocol: "2pc", outcome: "commit", branches, createdAt: 1, at: 2 });
  // Held back: a later waited append in the hold shares its sync.
  const held = wal.append([end("h1")], false);
  await new Promise((r) => setImmediate(r));
  expect(wal.stats.flushes).toBe(0);
  await Promise.all([held, wal.append([prepared("h2")])]);
  expect(wal.stats.flushes).toBe(1);
  // Held back, then someone waits for it: it goes without waiting out the hold.
  const position = wal.write([end("h3")], false);
  const alone = wal.barrier();
  wal.hurry(position);
  await new Promise((r) => setImmediate(r)); // one turn: a small batch after a small batch syncs inline
  expect(wal.stats.flushes).toBe(2);
  await alone;
  // Nobody comes: the hold ends by itself.
  await wal.append([end("h4")], false);
  expect(wal.stats.flushes).toBe(3);
  await wal.close();
});

test("the journal's sync thread reports a failed fdatasync with its code, goes on syncing, and refuses once stopped", async () => {
  const d = tempDir("dtx-wal-");
  dirs.push(d);
  const syncer = new SyncThread();
  try {
    const err = await syncer.fdatasync(2 ** 30).then(() => undefined, (e: NodeJS.ErrnoException) => e);
    expect(err?.code).toBe("EBADF");
    const fd = openSync(join(d, "f"), "w");
    await syncer.fdatasync(fd);
    syncer.stop();
    // A stopped thread refuses at once; nothing is left waiting on it.
    const refused = await syncer.fdatasync(fd).then(() => undefined, (e: Error) => e);
    expect(refused?.message).toBe("the journal was closed");
    closeSync(fd);
  } finally {
    syncer.stop();
  }
});

test("memory: crash drops the unflushed tail and nothing flushed", async () => {
  const wal = new MemoryWal(false);
  wal.write([{ r: "c.end", name: "kept", protocol: "2pc", outcome: "commit", branches, createdAt: 1, at: 2 }]);
  wal.flush();
  wal.write([{ r: "c.end", name: "lost", protocol: "2pc", outcome: "commit", branches, createdAt: 1, at: 2 }]);
  expect(wal.coordinator("lost")).toBeDefined();
  wal.crash();
  expect(wal.coordinator("lost")).toBeUndefined();
  expect(wal.coordinator("kept")?.state).toBe("committed");
});

describe("LMDB journal", () => {
  const fresh = () => {
    const d = tempDir("dtx-journal-");
    dirs.push(d);
    mkdirSync(join(d, "wal"), { recursive: true });
    return join(d, "wal");
  };
  const end = (name: string): LogRecord => ({ r: "c.end", name, protocol: "2pc", outcome: "commit", branches, createdAt: 1, at: 2 });
  /** A journal of these batches (seq 1, 2, …), made durable and closed without a sidecar: what a crash can leave. */
  const journalOf = (path: string, ...batches: LogRecord[][]) => {
    const journal = new Journal(path, 1);
    batches.forEach((records, i) => journal.write(i + 1, records));
    journal.sync();
    journal.close(false);
  };

  test("batches the journal made durable but LMDB never got are replayed at start-up, once", async () => {
    const path = fresh();
    // The state a crash leaves when the journal's fdatasync returned but LMDB's commit never happened.
    journalOf(path, [end("j1")], [prepared("j2")]);
    let wal = new LmdbWal(path);
    expect(wal.coordinator("j1")?.state).toBe("committed");
    expect(wal.branch("j2", "A.x.1")?.state).toBe("prepared");
    await wal.append([end("j3")]);
    await wal.close();
    wal = new LmdbWal(path);
    expect(wal.list({}).map((s) => s.name).sort()).toEqual(["j1", "j3"]);
    await wal.close();
  });

  test("a full journal file is sealed, then deleted once LMDB holds its batches; nothing is lost across the switch", async () => {
    const path = fresh();
    let wal = new LmdbWal(path, { journalFileBytesMax: 16 * 1024 });
    const pad = "p".repeat(500);
    let sealedSeen = 0;
    for (let i = 0; i < 200; i++) {
      await wal.append([{ r: "c.end", name: `r${i}`, protocol: "2pc", outcome: "commit", branches, createdAt: 1, at: 2, reason: pad }]);
      sealedSeen = Math.max(sealedSeen, wal.journalFiles);
    }
    expect(sealedSeen).toBeGreaterThan(1);
    // LMDB catches up within a checkpoint or two; then only the current file is left.
    await waitFor(() => wal.journalFiles === 1, 5_000, "sealed journal files released");
    await wal.close();
    wal = new LmdbWal(path);
    expect(wal.list({ limit: 1000 }).length).toBe(200);
    await wal.close();
  });

  test("a torn frame at the journal's tail is ignored and the batches before it kept", async () => {
    const path = fresh();
    journalOf(path, [end("kept")], [end("torn")]);
    const file = join(path, "journal-1.log");
    // Damage the last byte of the second frame, as a write cut off by a crash leaves it.
    const bytes = readFileSync(file);
    const second = 8 + bytes.readUInt32BE(0);
    const lastByte = second + 8 + bytes.readUInt32BE(second) - 1;
    bytes[lastByte] ^= 0xff;
    writeFileSync(file, bytes);
    const wal = new LmdbWal(path);
    expect(wal.coordinator("kept")?.state).toBe("committed");
    expect(wal.coordinator("torn")).toBeUndefined();
    await wal.close();
  });
});
