// 100,000 random and mutated frames at the client socket and the federation
// endpoint: the sidecar never crashes, every bad message gets an error code,
// and a bank check before and after shows identical balances.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { type Client, connect } from "../../client/index.ts";
import { FEDERATION_VERSION, PROTOCOL_VERSION } from "../../src/limits.ts";
import { peerMac } from "../../src/federation/auth.ts";
import { ErrorCode } from "../../src/protocol/errors.ts";
import { decodeBody, encodeBody, FrameDecoder } from "../../src/protocol/frame.ts";
import { prng } from "../helpers/prng.ts";
import { rawExchange } from "../helpers/raw-socket.ts";
import { SidecarProcess, tempDir, waitFor } from "../helpers/sidecar-process.ts";

const seed = Number(process.env.DTX_FUZZ_SEED ?? 20261123);
const rand = prng(seed);
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)];
const knownCodes = new Set<string>(Object.values(ErrorCode));
const secret = "fuzz-secret";
const accounts = 20;

let sc: SidecarProcess;
let dtx: Client;
beforeAll(async () => {
  const dir = tempDir("dtx-fuzz-");
  const secretFile = join(dir, "secret");
  writeFileSync(secretFile, secret);
  sc = await new SidecarProcess({ id: "F", dir, secretFile }).start();
  dtx = await connect({ socket: sc.socket });
  for (let i = 0; i < accounts; i++) {
    await dtx.beginDistributed(`open-${i}`, (tx) => tx.put(`acct/${i}`, 1000 + i));
    await dtx.commitDistributed(`open-${i}`);
  }
});
afterAll(async () => {
  dtx?.close();
  await sc?.cleanup();
});

async function balances(): Promise<unknown[]> {
  return Promise.all(Array.from({ length: accounts }, (_, i) => dtx.get(`acct/${i}`)));
}

/** Valid requests of every kind, to be mutated. */
function template(i: number): Record<string, unknown> {
  const name = `fz-${i % 50}`;
  return pick([
    { id: i, op: "begin", name, timeoutMs: 200 },
    { id: i, op: "put", name, branch: "F.zzzz.1", key: `acct/${i % accounts}`, value: i },
    { id: i, op: "get", key: `acct/${i % accounts}` },
    { id: i, op: "prepare", name },
    { id: i, op: "commit", name },
    { id: i, op: "rollback", name },
    { id: i, op: "status", name },
    { id: i, op: "list", state: "prepared", limit: 5 },
    { id: i, op: "join", token: "eyJ2IjoxfQ" },
    { id: i, op: "end", name, branch: "F.zzzz.1", ok: true },
    { id: i, op: "o_create", name, consistency: "eventual" },
    { id: i, op: "o_add", name, participant: { participantId: "p", endpoint: "http://127.0.0.1:1/x" } },
    { id: i, op: "resolve", name, outcome: "commit" },
    { id: i, op: "hello", version: PROTOCOL_VERSION },
  ]);
}

function mutate(bytes: Uint8Array): Uint8Array {
  const b = [...bytes];
  const n = 1 + Math.floor(rand() * 4);
  for (let k = 0; k < n; k++) {
    const at = Math.floor(rand() * (b.length + 1));
    switch (Math.floor(rand() * 4)) {
      case 0:
        if (b.length) b[at % b.length] = Math.floor(rand() * 256);
        break;
      case 1:
        b.splice(at, 0, Math.floor(rand() * 256));
        break;
      case 2:
        if (b.length > 1) b.splice(at % b.length, 1);
        break;
      case 3:
        b.length = Math.max(1, at);
        break;
    }
  }
  return Uint8Array.from(b);
}

function frame(body: Uint8Array): Uint8Array {
  const f = new Uint8Array(4 + body.length);
  new DataView(f.buffer).setUint32(0, body.length, false);
  f.set(body, 4);
  return f;
}

/** Send frames pipelined on one connection; resolve with every reply. */
function pipeline(frames: Uint8Array[]): Promise<{ id?: number; ok: boolean; error?: { code: string } }[]> {
  return new Promise((resolve, reject) => {
    const replies: { id?: number; ok: boolean; error?: { code: string } }[] = [];
    const decoder = new FrameDecoder(Number.MAX_SAFE_INTEGER);
    const timer = setTimeout(() => reject(new Error(`only ${replies.length} of ${frames.length} replies`)), 30_000);
    const all = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
    let off = 0;
    for (const f of frames) {
      all.set(f, off);
      off += f.length;
    }
    let sent = 0;
    Bun.connect({
      unix: sc.socket,
      socket: {
        open: (s) => void (sent += s.write(all)),
        drain: (s) => void (sent += s.write(all.subarray(sent))),
        data: (s, chunk) => {
          for (const ev of decoder.push(chunk)) if (ev.kind === "body") replies.push(ev.body as never);
          if (replies.length >= frames.length) {
            clearTimeout(timer);
            s.end();
            resolve(replies);
          }
        },
        close: () => {
          clearTimeout(timer);
          resolve(replies);
        },
        error: (_s, e) => reject(e),
      },
    }).catch(reject);
  });
}

test(`100,000 random and mutated frames (seed ${seed}): no crash, every bad one gets an error code, balances identical`, async () => {
  const before = await balances();
  const codes = new Map<string, number>();
  const count = (code: string) => codes.set(code, (codes.get(code) ?? 0) + 1);
  let sent = 0;

  // 1. Client socket, 85,000 mutated requests pipelined in batches: one reply each.
  for (let batch = 0; batch < 85; batch++) {
    const frames = Array.from({ length: 1000 }, (_, k) => frame(mutate(encodeBody(template(batch * 1000 + k)))));
    const replies = await pipeline(frames);
    expect(replies.length).toBe(frames.length);
    for (const r of replies) {
      if (r.ok) continue;
      expect(knownCodes.has(r.error!.code)).toBe(true);
      count(r.error!.code);
    }
    sent += frames.length;
  }

  // 2. Client socket, 5,000 connections with random bytes: an error or a clean close.
  for (let i = 0; i < 5000; i++) {
    const len = Math.floor(rand() * 40);
    const junk = Uint8Array.from({ length: len }, () => Math.floor(rand() * 256));
    const r = await rawExchange(sc.socket, junk, { timeoutMs: len >= 4 ? 200 : 5 });
    for (const reply of r.replies as { ok: boolean; error?: { code: string } }[]) {
      if (!reply.ok) {
        expect(knownCodes.has(reply.error!.code)).toBe(true);
        count(reply.error!.code);
      }
    }
    sent++;
  }

  // 3. Federation endpoint, authenticated as peer X: 9,000 mutated peer messages, each bad one answered with an error.
  const ws = new WebSocket(`ws://127.0.0.1:${sc.port}/v1/federation`);
  ws.binaryType = "arraybuffer";
  const inbound: Record<string, unknown>[] = [];
  ws.onmessage = (ev) => inbound.push(decodeBody(new Uint8Array(ev.data as ArrayBuffer)) as Record<string, unknown>);
  await waitFor(() => inbound.some((m) => m.t === "challenge"), 5_000, "challenge");
  const challenge = inbound.find((m) => m.t === "challenge")!;
  ws.send(encodeBody({ t: "auth", v: FEDERATION_VERSION, id: "X", mac: peerMac(secret, challenge.nonce as string, "X"), nonce: "0123456789abcdef0123456789abcdef" }));
  await waitFor(() => inbound.some((m) => m.t === "welcome"), 5_000, "welcome");
  const peerTemplates = [
    { t: "enlist", name: "fz-1", branch: "X.a.1", from: "X" },
    { t: "vote", name: "fz-1", branch: "X.a.1", from: "X", vote: "yes" },
    { t: "decision", name: "open-1", branch: "F.a.1", from: "X", outcome: "commit" },
    { t: "ack", name: "fz-1", branch: "X.a.1", from: "X" },
    { t: "query", name: "open-2", branch: "X.a.1", from: "X" },
    { t: "prepare", name: "fz-2", branch: "X.a.2", from: "X" },
  ];
  let bad = 0;
  for (let i = 0; i < 9000; i++) {
    const bytes = i % 10 === 0 ? Uint8Array.from({ length: 1 + Math.floor(rand() * 30) }, () => Math.floor(rand() * 256)) : mutate(encodeBody(pick(peerTemplates)));
    let valid = false;
    try {
      const body = decodeBody(bytes) as { from?: unknown };
      valid = (await import("../../src/protocol/messages.ts")).peerMessage.safeParse(body).success && body.from === "X";
    } catch {}
    if (!valid) bad++;
    ws.send(bytes);
    sent++;
  }
  await waitFor(() => inbound.filter((m) => m.t === "error").length >= bad, 20_000, `${bad} error answers`);
  for (const m of inbound.filter((x) => x.t === "error")) {
    expect(knownCodes.has(m.code as string)).toBe(true);
    count(`federation:${m.code}`);
  }
  expect(ws.readyState).toBe(WebSocket.OPEN);
  ws.close();

  // 4. Federation endpoint, 1,000 unauthenticated sockets sending junk: each is closed with a code.
  for (let i = 0; i < 1000; i++) {
    const raw = new WebSocket(`ws://127.0.0.1:${sc.port}/v1/federation`);
    raw.binaryType = "arraybuffer";
    const closed = new Promise<number>((r) => (raw.onclose = (ev) => r(ev.code)));
    await new Promise((r) => (raw.onopen = r));
    raw.send(rand() < 0.5 ? Uint8Array.from({ length: 8 }, () => Math.floor(rand() * 256)) : encodeBody(pick(peerTemplates)));
    const code = await closed;
    expect(code).toBeGreaterThanOrEqual(4000);
    count(`federation-close:${code}`);
    sent++;
  }

  expect(sent).toBe(100_000);
  console.log(`seed ${seed}: ${sent} frames; error codes:`, Object.fromEntries(codes));
  expect(sc.proc?.exitCode).toBeNull();
  expect((await fetch(`http://127.0.0.1:${sc.port}/healthz`)).status).toBe(200);
  expect(await balances()).toEqual(before);
  // Still fully working afterwards.
  await dtx.beginDistributed("after-fuzz", async (tx) => {
    const a = (await tx.get<number>("acct/0"))!;
    const b = (await tx.get<number>("acct/1"))!;
    await tx.put("acct/0", a - 10);
    await tx.put("acct/1", b + 10);
  });
  await dtx.commitDistributed("after-fuzz");
  expect(await dtx.get("acct/0")).toBe(990);
}, 240_000);
