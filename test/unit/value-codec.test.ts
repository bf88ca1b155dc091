// Every codec that carries user values reads them back exactly: wire frames, the journal, LMDB (value.ts's options).
import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { open } from "lmdb";
import { decodeBody, encodeBody, encodeFrame, FrameDecoder } from "../../src/protocol/frame.ts";
import { Journal } from "../../src/wal/journal.ts";
import { LmdbWal } from "../../src/wal/lmdb-wal.ts";
import type { LogRecord } from "../../src/wal/records.ts";
import { tempDir } from "../helpers/sidecar-process.ts";

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
const freshWal = () => {
  const d = tempDir("dtx-codec-");
  dirs.push(d);
  mkdirSync(join(d, "wal"));
  return join(d, "wal");
};

/** One of every kind value.ts accepts. */
const values: Record<string, unknown> = {
  bigint64: 12345678901234567890n,
  bigintHuge: 2n ** 200n,
  bigintHugeNegative: -(2n ** 200n) - 12345n,
  bigintSmall: 5n,
  numbers: [0, -1, 1.5, 2 ** 40, 2 ** 53 + 2, -(2 ** 62), Number.MAX_VALUE, Number.MIN_VALUE, NaN, Infinity, -Infinity],
  date: new Date("2024-02-29T12:34:56.789Z"),
  dateOld: new Date(-8.64e15),
  bytes: new Uint8Array([0, 1, 254, 255]),
  text: "héllo 😀",
  nested: { a: [{ b: undefined, c: null, d: [true, false] }], e: {} },
};
const branches = [{ id: "A.x.1", sidecar: "A" }];
const committed = (writes: [string, unknown, boolean][]): LogRecord => ({ r: "p.end", name: "t", branch: "A.x.1", coordinator: "A", outcome: "commit", writes, version: 1, at: 1 });
const writes = Object.entries(values).map(([k, v]): [string, unknown, boolean] => [k, v, false]);

/**
 * Each value reads back equal to what was written. What reaches a client comes from a frame and must be a
 * plain Uint8Array; inside the sidecar (journal, LMDB) bytes may come back as a Buffer, re-encoded as bin anyway.
 */
function expectExact(read: (key: string) => unknown, where: "client" | "sidecar") {
  for (const [k, v] of Object.entries(values)) {
    const got = read(k);
    if (v instanceof Uint8Array && where === "sidecar") {
      expect(got).toBeInstanceOf(Uint8Array);
      expect(Uint8Array.from(got as Uint8Array)).toStrictEqual(Uint8Array.from(v));
      continue;
    }
    expect(got).toStrictEqual(v as never);
    if (v instanceof Uint8Array) expect(Object.getPrototypeOf(got)).toBe(Uint8Array.prototype);
  }
}

describe("stored values survive every codec exactly", () => {
  test("wire: a frame in a Buffer chunk decodes each value exactly, bytes as a plain Uint8Array copy", () => {
    const frame = Buffer.from(encodeFrame({ id: 1, values })); // sockets hand over Buffers
    const events = new FrameDecoder().push(frame);
    expect(events.map((e) => e.kind)).toEqual(["body"]);
    const body = (events[0] as { body: { values: Record<string, unknown> } }).body;
    expectExact((k) => body.values[k], "client");
    frame.fill(0); // were the chunk reused, a stored value must not change with it
    expectExact((k) => body.values[k], "client");
  });

  test("peer links: decodeBody of a Buffer gives the same values", () => {
    const body = decodeBody(Buffer.from(encodeBody(values))) as Record<string, unknown>;
    expectExact((k) => body[k], "client");
  });

  test("journal, then LMDB: a committed write set replayed at start-up reads back exactly", async () => {
    const path = freshWal();
    const journal = new Journal(path, 1);
    journal.write(1, [committed(writes)]);
    journal.sync();
    journal.close(false);
    const wal = new LmdbWal(path); // replays the journal into LMDB; reads now come from LMDB
    expectExact((k) => wal.kvGet(k)?.value, "sidecar");
    await wal.close();
  });

  test("LMDB: written by a checkpoint, read after reopening", async () => {
    const path = freshWal();
    let wal = new LmdbWal(path);
    await wal.append([committed(writes), { r: "c.end", name: "t", protocol: "2pc", outcome: "commit", branches, createdAt: 1, at: 2 }]);
    await wal.close();
    wal = new LmdbWal(path);
    expectExact((k) => wal.kvGet(k)?.value, "sidecar");
    await wal.close();
  });

  test("LMDB: a store written with the options before BigInt support reads the same", async () => {
    const path = freshWal();
    const old = { n: 2 ** 40, f: 1.5, s: "x", d: new Date(5), b: new Uint8Array([1]), o: { u: undefined } };
    const env = open({ path, compression: false, maxDbs: 8 });
    const kv = env.openDB<{ v: unknown; ver: number }, string>({ name: "kv", encoder: { useRecords: false } } as never);
    await kv.put("old", { v: old, ver: 3 });
    await env.close();
    const wal = new LmdbWal(path);
    const { value, version } = wal.kvGet("old")!;
    expect(version).toBe(3);
    expect({ ...(value as object), b: Uint8Array.from((value as { b: Uint8Array }).b) }).toStrictEqual(old);
    await wal.close();
  });

  test("a frame using the reference extension is undecodable, not a circular value", () => {
    // fixext4 0x69 (an id for a structured clone), then an empty array
    const events = new FrameDecoder().push(new Uint8Array([0, 0, 0, 7, 0xd6, 0x69, 0, 0, 0, 1, 0x90]));
    expect(events.map((e) => e.kind)).toEqual(["undecodable"]);
  });
});
