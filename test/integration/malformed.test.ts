// Hostile input on the client socket: every bad frame gets an error or a clean
// close, the sidecar stays up, and committed data is untouched.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { encodeBody, encodeFrame } from "../../src/protocol/frame.ts";
import { ErrorCode } from "../../src/protocol/errors.ts";
import { type Client, connect } from "../../client/index.ts";
import { rawExchange } from "../helpers/raw-socket.ts";
import { SidecarProcess } from "../helpers/sidecar-process.ts";
import { prng } from "../helpers/prng.ts";

let sc: SidecarProcess;
let dtx: Client;
beforeAll(async () => {
  sc = await new SidecarProcess({ id: "fuzz" }).start();
  dtx = await connect({ socket: sc.socket });
  for (let i = 0; i < 10; i++) {
    await dtx.beginDistributed(`seed-${i}`, async (tx) => tx.put(`acct/${i}`, 100 + i));
    await dtx.commitDistributed(`seed-${i}`);
  }
});
afterAll(async () => {
  dtx?.close();
  await sc?.cleanup();
});

const knownCodes = new Set<string>(Object.values(ErrorCode));

function lengthPrefixed(body: Uint8Array, claimed = body.length): Uint8Array {
  const f = new Uint8Array(4 + body.length);
  new DataView(f.buffer).setUint32(0, claimed, false);
  f.set(body, 4);
  return f;
}

/** One malformed input of the given kind, drawn from the PRNG. */
function malformed(rand: () => number, kind: number): { bytes: Uint8Array; expectReply: boolean } {
  const randomBytes = (n: number) => Uint8Array.from({ length: n }, () => Math.floor(rand() * 256));
  const ops = ["begin", "put", "get", "commit", "rollback", "prepare", "join", "end", "status", "list", "hello", "nope", ""];
  switch (kind) {
    case 0: // random body with an honest length
      return { bytes: lengthPrefixed(randomBytes(1 + Math.floor(rand() * 64))), expectReply: true };
    case 1: // valid msgpack, not a request
      return { bytes: encodeFrame([1, "x", null][Math.floor(rand() * 3)]), expectReply: true };
    case 2: {
      // a request with wrong or missing fields
      const op = ops[Math.floor(rand() * ops.length)];
      const fields: Record<string, unknown> = { id: Math.floor(rand() * 1000) + 1, op };
      if (rand() < 0.5) fields.name = rand() < 0.5 ? "bad name!" : 42;
      if (rand() < 0.5) fields.key = rand() < 0.5 ? "" : "k".repeat(600);
      if (rand() < 0.3) fields.branch = { nested: true };
      if (rand() < 0.3) fields.token = "not-a-token";
      if (rand() < 0.2) fields.version = "one";
      if (op === "get" || op === "status" || op === "list") fields.name = "bad name!";
      return { bytes: encodeFrame(fields), expectReply: true };
    }
    case 3: // a length prefix over frameBytesMax
      return { bytes: lengthPrefixed(randomBytes(8), 0x7fffffff - Math.floor(rand() * 1000)), expectReply: true };
    default: // a truncated frame, then the client goes away
      return { bytes: lengthPrefixed(randomBytes(4), 1000), expectReply: false };
  }
}

test("1,000 malformed or random frames: each gets an error or a clean close; the sidecar stays up and its data is intact", async () => {
  const rand = prng(Number(process.env.DTX_FUZZ_SEED ?? 7));
  const byCode = new Map<string, number>();
  for (let i = 0; i < 1000; i++) {
    const { bytes, expectReply } = malformed(rand, i % 5);
    const r = await rawExchange(sc.socket, bytes, { timeoutMs: expectReply ? 2_000 : 5 });
    if (expectReply) expect(r.replies.length).toBeGreaterThanOrEqual(1);
    for (const reply of r.replies as { ok: boolean; error?: { code: string } }[]) {
      if (reply.ok) continue; // e.g. a random but valid "list" — answering it is fine
      expect(knownCodes.has(reply.error!.code)).toBe(true);
      byCode.set(reply.error!.code, (byCode.get(reply.error!.code) ?? 0) + 1);
    }
  }
  console.log("error codes seen:", Object.fromEntries(byCode));
  expect(byCode.get("BAD_REQUEST")).toBeGreaterThan(0);
  expect(byCode.get("FRAME_TOO_LARGE")).toBeGreaterThan(0);
  expect(sc.proc?.exitCode).toBeNull();
  expect((await fetch(`http://127.0.0.1:${sc.port}/healthz`)).status).toBe(200);
  for (let i = 0; i < 10; i++) expect(await dtx.get(`acct/${i}`)).toBe(100 + i);
}, 120_000);

test("a bad request names the field and keeps the connection usable", async () => {
  const frames = new Uint8Array([...encodeFrame({ id: 1, op: "begin", name: "no spaces allowed" }), ...encodeFrame({ id: 2, op: "get", key: "acct/1" })]);
  const r = await rawExchange(sc.socket, frames, { expect: 2 });
  const [bad, good] = r.replies as { id: number; ok: boolean; error?: { code: string; message: string }; value?: unknown }[];
  expect(bad).toMatchObject({ id: 1, ok: false, error: { code: "BAD_REQUEST" } });
  expect(bad.error!.message).toContain("name");
  expect(good).toMatchObject({ id: 2, ok: true, found: true, value: 101 });
});

test("a hello with another protocol version is a clear error", async () => {
  const r = await rawExchange(sc.socket, encodeFrame({ id: 1, op: "hello", version: 99 }));
  expect(r.replies[0]).toMatchObject({ id: 1, ok: false, error: { code: "PROTOCOL_VERSION" } });
});

test("an oversize frame is answered with FRAME_TOO_LARGE and the connection is closed", async () => {
  const r = await rawExchange(sc.socket, lengthPrefixed(encodeBody({ id: 1 }), 64 * 1024 * 1024), { expect: 2 });
  expect(r.replies[0]).toMatchObject({ id: 0, ok: false, error: { code: "FRAME_TOO_LARGE" } });
  expect(r.closedByServer).toBe(true);
});

test("a value over valueBytesMax is refused with LIMIT_EXCEEDED and the connection stays usable", async () => {
  const begun = await rawExchange(sc.socket, encodeFrame({ id: 1, op: "begin", name: "big-value" }));
  const branch = (begun.replies[0] as { branch: string }).branch;
  expect(branch).toBeDefined();
  const big = "x".repeat(1_500_000);
  const frames = new Uint8Array([
    ...encodeFrame({ id: 2, op: "put", name: "big-value", branch, key: "k", value: big }),
    ...encodeFrame({ id: 3, op: "get", key: "acct/2" }),
  ]);
  const r = await rawExchange(sc.socket, frames, { expect: 2 });
  const [tooBig, ok] = r.replies as { id: number; ok: boolean; error?: { code: string; message: string }; value?: unknown }[];
  expect(tooBig).toMatchObject({ id: 2, ok: false, error: { code: "LIMIT_EXCEEDED" } });
  expect(tooBig.error!.message).toContain("valueBytesMax");
  expect(ok).toMatchObject({ id: 3, ok: true, value: 102 });
});
