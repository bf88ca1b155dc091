// Values come back exactly as they went in, or are refused at tx.put naming the key: through real sidecar
// processes (the wire, the journal, LMDB, a sidecar restart, a joined branch on a peer) and at the
// sidecar's own door for what other clients may send.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Packr } from "msgpackr";
import { type Client, connect, ProtocolError } from "../../client/index.ts";
import { limits } from "../../src/limits.ts";
import { encodeBody, encodeFrame } from "../../src/protocol/frame.ts";
import { freePorts, waitForLinks } from "../helpers/federation.ts";
import { rawExchange } from "../helpers/raw-socket.ts";
import { SidecarProcess, waitFor } from "../helpers/sidecar-process.ts";

const [portA, portB] = freePorts(2);
let A: SidecarProcess;
let B: SidecarProcess;
let a: Client;
let b: Client;

beforeAll(async () => {
  A = new SidecarProcess({ id: "vA", port: portA, peers: [`vB=ws://127.0.0.1:${portB}`] });
  B = new SidecarProcess({ id: "vB", port: portB, peers: [`vA=ws://127.0.0.1:${portA}`] });
  await Promise.all([A.start(), B.start()]);
  await Promise.all([waitForLinks(A, ["vB"]), waitForLinks(B, ["vA"])]);
  [a, b] = await Promise.all([connect({ socket: A.socket }), connect({ socket: B.socket })]);
});
afterAll(async () => {
  a?.close();
  b?.close();
  await Promise.all([A?.cleanup(), B?.cleanup()]);
});

/** Every kind the README lists as stored exactly. */
const accepted: Record<string, unknown> = {
  "bigint-64-bit": 12345678901234567890n,
  "bigint-2-200": 2n ** 200n,
  "bigint-negative-huge": -(2n ** 200n) - 987654321n,
  "bigint-small": 7n,
  numbers: [0, -1, 1.5, 2 ** 40, 2 ** 53 + 2, -(2 ** 62), Number.MAX_VALUE, Number.MIN_VALUE],
  nan: NaN,
  infinities: [Infinity, -Infinity],
  date: new Date("2024-02-29T12:34:56.789Z"),
  "date-before-1970": new Date(-123456789),
  bytes: new Uint8Array([0, 1, 127, 128, 254, 255]),
  "empty-bytes": new Uint8Array(0),
  text: "héllo 😀 \u0000 end",
  null: null,
  booleans: [true, false],
  "undefined-inside": { a: undefined, list: [1, undefined] },
  "nested-mix": {
    order: { id: 2n ** 70n, items: [{ sku: "A", qty: 2, price: 12.5 }], placedAt: new Date(0), signature: new Uint8Array([9, 8, 7]) },
    tags: ["x", { deep: [[[{ n: -0.5 }]]] }],
    note: null,
  },
};
const keyOf = (prefix: string, kind: string) => `${prefix}/${kind}`;

/** Reads back equal, including bigint vs number and a plain Uint8Array (not a Buffer). */
function expectSame(got: unknown, want: unknown): void {
  expect(got).toStrictEqual(want as never);
  if (want instanceof Uint8Array) expect(Object.getPrototypeOf(got)).toBe(Uint8Array.prototype);
}

async function putAll(dtx: Client, txn: string, prefix: string): Promise<void> {
  await dtx.beginDistributed(txn, async (tx) => {
    for (const [kind, v] of Object.entries(accepted)) await tx.put(keyOf(prefix, kind), v);
  });
}

/** Each value read outside a transaction (dtx.get) and inside one (tx.get, from the sidecar's store). */
async function expectAllStored(dtx: Client, txn: string, prefix: string): Promise<void> {
  for (const [kind, v] of Object.entries(accepted)) expectSame(await dtx.get(keyOf(prefix, kind)), v);
  await dtx.beginDistributed(txn, async (tx) => {
    for (const [kind, v] of Object.entries(accepted)) expectSame(await tx.get(keyOf(prefix, kind)), v);
  });
  await dtx.rollbackDistributed(txn);
}

describe("every accepted kind round-trips exactly", () => {
  for (const [kind, v] of Object.entries(accepted)) {
    test(`${kind}: tx.get of the buffered write, then dtx.get and tx.get after commit`, async () => {
      const key = keyOf("rt", kind);
      await a.beginDistributed(`rt-${kind}`, async (tx) => {
        await tx.put(key, v);
        expectSame(await tx.get(key), v);
      });
      await a.commitDistributed(`rt-${kind}`);
      expectSame(await a.get(key), v);
      await a.beginDistributed(`rt-read-${kind}`, async (tx) => expectSame(await tx.get(key), v));
      await a.rollbackDistributed(`rt-read-${kind}`);
    });
  }

  test("committed values survive kill -9 and a restart (the journal, then LMDB)", async () => {
    await putAll(a, "kill-1", "kill");
    await a.commitDistributed("kill-1");
    // kill -9, most likely before LMDB's next checkpoint: start-up replays the journal into LMDB (each path
    // on its own: test/unit/value-codec.test.ts)
    await A.restart();
    await waitForLinks(A, ["vB"]);
    a.close();
    a = await connect({ socket: A.socket });
    await expectAllStored(a, "kill-read-1", "kill");
  });

  test("committed values survive a clean shutdown (LMDB) and a start", async () => {
    await putAll(a, "term-1", "term");
    await a.commitDistributed("term-1");
    expect(await A.sigterm()).toBe(0);
    await A.start();
    await waitForLinks(A, ["vB"]);
    a.close();
    a = await connect({ socket: A.socket });
    await expectAllStored(a, "term-read-1", "term");
  });

  test("a prepared write set survives kill -9 in the log, and commits exactly after the restart", async () => {
    await putAll(a, "prep-1", "prep");
    await A.restart();
    await waitForLinks(A, ["vB"]);
    a.close();
    a = await connect({ socket: A.socket });
    expect((await a.commitDistributed("prep-1")).outcome).toBe("committed");
    await expectAllStored(a, "prep-read-1", "prep");
  });

  test("a joined branch on a peer sidecar stores them exactly, also across that sidecar's restart", async () => {
    await a.beginDistributed("fed-1", async (tx) => {
      await tx.put("fed/marker", 1);
      await b.join(tx.context, async (t) => {
        for (const [kind, v] of Object.entries(accepted)) await t.put(keyOf("fed", kind), v);
      });
    });
    await B.restart(); // the joined branch is prepared on B: its write set is in B's log
    await waitForLinks(A, ["vB"]);
    b.close();
    b = await connect({ socket: B.socket });
    expect((await a.commitDistributed("fed-1")).outcome).toBe("committed");
    await waitFor(async () => (await b.status("fed-1")).state === "committed", 10_000, "B learned the commit");
    await expectAllStored(b, "fed-read-1", "fed");
  });

  test("an orchestrated store: step stores its payload's values exactly", async () => {
    const t = await a.createTransaction({ name: "saga-values-1", consistency: "eventual", context: { id: 2n ** 65n, at: new Date(1) } });
    await t.addParticipant({ participantId: "inventory", endpoint: "store:", payload: { put: { "saga/big": 2n ** 200n, "saga/when": new Date(5), "saga/bytes": new Uint8Array([1, 2]) } } });
    expect((await t.execute()).outcome).toBe("committed");
    expectSame(await a.get("saga/big"), 2n ** 200n);
    expectSame(await a.get("saga/when"), new Date(5));
    expectSame(await a.get("saga/bytes"), new Uint8Array([1, 2]));
  });
});

describe("refused at tx.put with BAD_REQUEST naming the key, the path and the reason; the transaction goes on", () => {
  class Money {
    constructor(readonly cents: number) {}
  }
  const circular: { self?: unknown } = {};
  circular.self = circular;
  let deep: unknown = 1;
  for (let i = 0; i < limits.valueDepthMax + 1; i++) deep = { d: deep };
  const refused: [kind: string, value: unknown, says: string][] = [
    ["a function", () => 1, "value is a function; functions are not stored"],
    ["a method in an object", { items: [{ total() {} }] }, "value.items[0].total is a function"],
    ["a symbol", { s: Symbol("x") }, "value.s is a symbol"],
    ["a circular object", circular, "value.self is a circular reference (it is value again)"],
    ["a Map", new Map([["a", 1]]), "value is a Map; Maps are not stored"],
    ["a Set", { s: new Set([1]) }, "value.s is a Set"],
    ["a class instance", { m: new Money(5) }, "value.m is a Money instance"],
    ["-0", [-0], "value[0] is -0"],
    ["a lone surrogate", { t: "\udc00" }, "value.t is a string with a lone surrogate at index 0"],
    ["an array hole", [1, , 2], "value[1] is a hole in the array"],
    ["a value nested too deep", deep, `is nested deeper than valueDepthMax (${limits.valueDepthMax} levels`],
  ];
  for (const [kind, value, says] of refused) {
    test(kind, async () => {
      const name = `bad-${kind.replace(/[^A-Za-z0-9]+/g, "-")}`;
      await a.beginDistributed(name, async (tx) => {
        const err = await tx.put("bad/key", value).catch((e) => e);
        expect(err).toBeInstanceOf(ProtocolError);
        expect(err.code).toBe("BAD_REQUEST");
        expect(err.message).toStartWith('tx.put("bad/key"): ');
        expect(err.message).toContain(says);
        await tx.put("bad/other", kind);
      });
      await a.commitDistributed(name);
      expect(await a.get("bad/key")).toBeUndefined();
      expect(await a.get("bad/other")).toBe(kind);
    });
  }

  test("a value changed after tx.put is checked again when the callback ends: a Map added fails the transaction", async () => {
    const order: Record<string, unknown> = { sku: "A" };
    const err = await a
      .beginDistributed("bad-changed-1", async (tx) => {
        await tx.put("bad/changed", order);
        order.byId = new Map([[1, "x"]]);
      })
      .catch((e) => e);
    expect(err).toBeInstanceOf(ProtocolError);
    expect(err.code).toBe("BAD_REQUEST");
    expect(err.message).toStartWith('tx.put("bad/changed"): value.byId is a Map');
    expect(err.message).toEndWith("(the value changed after tx.put: it is read again when the callback ends)");
    expect(await a.get("bad/changed")).toBeUndefined();
  });

  test("an orchestrated context or payload that cannot be stored is refused naming the call and the path", async () => {
    const err = await a.createTransaction({ name: "saga-bad-1", context: { retry() {} } }).catch((e) => e);
    expect(err).toMatchObject({ code: "BAD_REQUEST", message: 'createTransaction("saga-bad-1"): context.retry is a function; functions are not stored' });
    const t = await a.createTransaction({ name: "saga-bad-2" });
    const bad = await t.addParticipant({ participantId: "inv", endpoint: "store:", payload: { put: { "": 1 } } }).catch((e) => e);
    expect(bad).toMatchObject({ code: "BAD_REQUEST", message: 'addParticipant("inv"): store payload key "": a key must not be empty' });
  });
});

describe("keys and sizes", () => {
  test("an empty key, a key over keyBytesMax and a key with a lone surrogate are refused naming the key and the rule", async () => {
    const long = "k".repeat(limits.keyBytesMax + 1);
    await a.beginDistributed("keys-1", async (tx) => {
      await expect(tx.put("", 1)).rejects.toMatchObject({ code: "BAD_REQUEST", message: 'tx.put(""): a key must not be empty' });
      await expect(tx.delete(long)).rejects.toMatchObject({
        code: "BAD_REQUEST",
        message: `tx.delete("${"k".repeat(40)}"… (${long.length} characters)): the key is ${long.length} bytes of UTF-8, over keyBytesMax (${limits.keyBytesMax} bytes)`,
      });
      await expect(tx.put("a\ud800", 1)).rejects.toMatchObject({ code: "BAD_REQUEST", message: expect.stringContaining('tx.put("a\\ud800"): the key has a lone surrogate') });
      await expect(tx.get("")).rejects.toMatchObject({ code: "BAD_REQUEST", message: 'tx.get(""): a key must not be empty' });
    });
    await a.rollbackDistributed("keys-1");
    await expect(a.get(long)).rejects.toMatchObject({ code: "BAD_REQUEST", message: expect.stringMatching(/^dtx\.get\("kkkk.*over keyBytesMax/) });
  });

  test("a value over valueBytesMax is refused at tx.put with LIMIT_EXCEEDED naming its key", async () => {
    await a.beginDistributed("big-1", async (tx) => {
      const err = await tx.put("blobs/big", "x".repeat(limits.valueBytesMax)).catch((e) => e);
      expect(err).toBeInstanceOf(ProtocolError);
      expect(err.code).toBe("LIMIT_EXCEEDED");
      expect(err.message).toMatch(/^tx\.put\("blobs\/big"\): value is \d+ bytes in MessagePack, over valueBytesMax \(1048576 bytes\)$/);
      await tx.put("blobs/small", 1);
    });
    await a.commitDistributed("big-1");
    expect(await a.get("blobs/big")).toBeUndefined();
    expect(await a.get("blobs/small")).toBe(1);
  });
});

describe("the sidecar checks what other clients send, naming the key", () => {
  /** A prepare that carries its begin, one write, sent by hand: the client's checks are not in the way. */
  const prepareBytes = (name: string, key: string, value: unknown, packr?: Packr) =>
    frameOf({ id: 1, op: "prepare", name, branch: "vA.craw1", writes: [[key, value, false]], begin: { elapsedMs: 0 } }, packr);
  const frameOf = (body: unknown, packr?: Packr) => {
    if (!packr) return encodeFrame(body);
    const payload = packr.pack(body);
    const f = new Uint8Array(4 + payload.length);
    new DataView(f.buffer).setUint32(0, payload.length);
    f.set(payload, 4);
    return f;
  };
  const refusalOf = async (bytes: Uint8Array) => ((await rawExchange(A.socket, bytes)).replies[0] as { ok: boolean; error: { code: string; message: string } });

  test("a Set (msgpackr's ext 0x73) is BAD_REQUEST naming the key and the path", async () => {
    const withSets = new Packr({ useRecords: false, moreTypes: true });
    const r = await refusalOf(prepareBytes("raw-set-1", "raw/set", { tags: new Set(["a"]) }, withSets));
    expect(r).toMatchObject({ ok: false, error: { code: "BAD_REQUEST", message: 'tx.put("raw/set"): value.tags is a Set; Sets are not stored: use an array' } });
    expect((await a.status("raw-set-1").catch((e) => e)).code).toBe("NOT_FOUND");
  });

  test("a float64 -0 is BAD_REQUEST naming the key", async () => {
    const bytes = prepareBytes("raw-zero-1", "raw/zero", { n: 1.5 });
    const at = Buffer.from(bytes).indexOf(Buffer.from(encodeBody(1.5))); // 0xcb 3ff8…: make it -0
    bytes.set([0xcb, 0x80, 0, 0, 0, 0, 0, 0, 0], at);
    const r = await refusalOf(bytes);
    expect(r).toMatchObject({ ok: false, error: { code: "BAD_REQUEST", message: expect.stringMatching(/^tx\.put\("raw\/zero"\): value\.n is -0/) } });
  });

  test("a key over keyBytesMax in a write set is named as the user wrote it, not by its place in writes", async () => {
    const key = "é".repeat(limits.keyBytesMax);
    const r = await refusalOf(prepareBytes("raw-key-1", key, 1));
    expect(r).toMatchObject({ ok: false, error: { code: "BAD_REQUEST" } });
    expect(r.error.message).toBe(`tx.put("${"é".repeat(40)}"… (${key.length} characters)): the key is ${key.length * 2} bytes of UTF-8, over keyBytesMax (${limits.keyBytesMax} bytes)`);
  });

  test("an unknown field is named before a bad key in the same request", async () => {
    const r = await refusalOf(frameOf({ id: 1, op: "prepare", name: "raw-both-1", writes: [["", 1, false]], begin: { elapsedMs: 0 }, colour: "red" }));
    expect(r).toMatchObject({ ok: false, error: { code: "BAD_REQUEST", message: expect.stringMatching(/^colour: unknown field/) } });
  });

  test("a value over valueBytesMax in a write set is LIMIT_EXCEEDED naming its key", async () => {
    const r = await refusalOf(prepareBytes("raw-big-1", "raw/big", "x".repeat(limits.valueBytesMax + 1)));
    expect(r).toMatchObject({ ok: false, error: { code: "LIMIT_EXCEEDED" } });
    expect(r.error.message).toMatch(/^tx\.put\("raw\/big"\): value is \d+ bytes in MessagePack, over valueBytesMax \(1048576 bytes\)$/);
  });
});
