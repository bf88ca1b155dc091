// The client against a fake sidecar on a Unix socket: framing, pipelining, coalescing, backpressure, loss.
import { afterEach, describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { Socket as NetSocket } from "node:net";
import { tmpdir } from "node:os";
import { connect, OutcomeUnknownError, ProtocolError, TransactionConflictError, type Client } from "../../client/index.ts";
import { limits, PROTOCOL_VERSION } from "../../src/limits.ts";
import { contextToken } from "../../src/protocol/token.ts";
import { encodeFrame, FrameDecoder } from "../../src/protocol/frame.ts";
import { waitFor } from "../helpers/sidecar-process.ts";

type Req = { id: number; op: string } & Record<string, any>;
type PeerState = { decoder: FrameDecoder; unsent: Uint8Array };
type Peer = Socket<PeerState>;
type Handle = (req: Req, reply: (body: object) => void, peer: Peer) => void;

let seq = 0;
const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const fn of cleanups.splice(0)) fn();
});

/** Answers hello, hands every other request to `handle`. */
function fakeSidecar(handle: Handle = () => {}, path = `${tmpdir()}/dtx-client-${process.pid}-${seq++}.sock`) {
  const requests: Req[] = [];
  const peers = new Set<Peer>();
  const waiters: { ready: () => boolean; resolve: () => void }[] = [];
  let connections = 0;
  // Replies queue behind a short write until `drain`, as a real sidecar must.
  const write = (s: Peer, bytes: Uint8Array) => {
    s.data.unsent = s.data.unsent.length ? Buffer.concat([s.data.unsent, bytes]) : bytes;
    s.data.unsent = s.data.unsent.subarray(Math.max(0, s.write(s.data.unsent)));
  };
  const server = Bun.listen<PeerState>({
    unix: path,
    socket: {
      open(s) {
        s.data = { decoder: new FrameDecoder(), unsent: new Uint8Array(0) };
        peers.add(s);
        connections++;
      },
      close(s) {
        peers.delete(s);
      },
      drain(s) {
        write(s, new Uint8Array(0));
      },
      data(s, chunk) {
        for (const ev of s.data.decoder.push(chunk)) {
          if (ev.kind !== "body") throw new Error(`fake sidecar got ${ev.kind}`);
          const req = ev.body as Req;
          requests.push(req);
          const reply = (body: object) => write(s, encodeFrame(body));
          if (req.op === "hello") reply({ id: req.id, ok: true, version: PROTOCOL_VERSION, sidecar: "fake", defaultTimeoutMs: 30_000 });
          else handle(req, reply, s);
        }
        for (const w of waiters.filter((w) => w.ready())) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve();
        }
      },
    },
  });
  cleanups.push(() => server.stop(true));
  return {
    path,
    stop: () => server.stop(true),
    requests,
    get connections() {
      return connections;
    },
    ops: () => requests.map((r) => r.op),
    dropAll: () => peers.forEach((p) => p.terminate()),
    /** Resolves once the fake has received `n` requests with this op. */
    received(op: string, n = 1): Promise<void> {
      const ready = () => requests.filter((r) => r.op === op).length >= n;
      if (ready()) return Promise.resolve();
      return new Promise((resolve, reject) => {
        waiters.push({ ready, resolve });
        setTimeout(() => reject(new Error(`fake sidecar did not receive ${n} × ${op}`)), 2000);
      });
    },
  };
}

/** Records every socket.write the client makes (bytes asked, whether the socket took them without queueing) until the test ends. */
function spyOnSocketWrites(): { length: number; accepted: boolean }[] {
  const writes: { length: number; accepted: boolean }[] = [];
  const original = NetSocket.prototype.write;
  NetSocket.prototype.write = function (this: NetSocket, data: Uint8Array, ...rest: unknown[]) {
    const accepted = (original as (...a: unknown[]) => boolean).call(this, data, ...rest);
    writes.push({ length: data.length, accepted });
    return accepted;
  } as typeof original;
  cleanups.push(() => (NetSocket.prototype.write = original));
  return writes;
}

async function client(path: string, opts: { reconnect?: boolean } = {}): Promise<Client> {
  const c = await connect({ socket: path, connectTimeoutMs: 1000, ...opts });
  cleanups.unshift(() => c.close());
  return c;
}

const ok = (req: Req, result: object = {}) => ({ id: req.id, ok: true, ...result });
const statusView = (name: string) => ({
  name,
  state: "prepared",
  protocol: "2pc",
  coordinator: "fake",
  participants: [],
  timestamps: { begun: 1, prepared: 2, decided: null, finished: null },
  error: null,
});
const fail = (req: Req, code: string, message = code, extra: object = {}) => ({
  id: req.id,
  ok: false,
  error: { code, message, retryable: false, ...extra },
});

describe("client wire", () => {
  test("hello is the first request, with the protocol version, and ids increase from 1", async () => {
    const fake = fakeSidecar((req, reply) => reply(ok(req, { found: false })));
    const dtx = await client(fake.path);
    await dtx.get("a");
    await dtx.get("b");
    expect(fake.requests.map((r) => [r.id, r.op])).toEqual([
      [1, "hello"],
      [2, "get"],
      [3, "get"],
    ]);
    expect(fake.requests[0].version).toBe(PROTOCOL_VERSION);
  });

  test("a PROTOCOL_VERSION reply to hello rejects connect without retrying", async () => {
    const path = `${tmpdir()}/dtx-client-${process.pid}-${seq++}.sock`;
    let hellos = 0;
    const server = Bun.listen({
      unix: path,
      socket: {
        data(s, chunk) {
          for (const ev of new FrameDecoder().push(chunk)) {
            hellos++;
            s.write(encodeFrame(fail(ev.kind === "body" ? (ev.body as Req) : ({ id: 0 } as Req), "PROTOCOL_VERSION", "sidecar speaks 2")));
          }
        },
      },
    });
    cleanups.push(() => server.stop(true));
    const err = await connect({ socket: path }).catch((e) => e);
    expect(err).toBeInstanceOf(ProtocolError);
    expect(err.code).toBe("PROTOCOL_VERSION");
    expect(hellos).toBe(1);
  });

  test("pipelined replies that come back out of order reach their own callers", async () => {
    const held: Req[] = [];
    const fake = fakeSidecar((req, reply) => {
      held.push(req);
      if (held.length === 100) for (const r of held.reverse()) reply(ok(r, { found: true, value: `v:${r.key}` }));
    });
    const dtx = await client(fake.path);
    const keys = Array.from({ length: 100 }, (_, i) => `k${i}`);
    expect(await Promise.all(keys.map((k) => dtx.get(k)))).toEqual(keys.map((k) => `v:${k}`));
  });

  test("frames written in one tick leave in one socket write", async () => {
    const fake = fakeSidecar((req, reply) => reply(ok(req, { found: false })));
    const writes = spyOnSocketWrites();
    const dtx = await client(fake.path);
    writes.length = 0;
    await Promise.all(Array.from({ length: 50 }, (_, i) => dtx.get(`k${i}`)));
    expect(writes.length).toBe(1);
    expect(fake.ops().filter((op) => op === "get").length).toBe(50);
  });

  test("writes larger than the socket buffer are finished on drain, intact and in order", async () => {
    // Each under valueBytesMax, together over half a frame: they go as single puts, many MiB in one socket write.
    const sizes = [1023, 1, 1023, 0, 1023, 1023, 1023, 1023, 1023, 1023, 1023].map((kib) => kib * 1024 + 7);
    const fake = fakeSidecar((req, reply) => {
      if (req.op === "begin") reply(ok(req, { name: req.name, branch: "A:1", context: "tok", protocol: "2pc" }));
      if (req.op === "put") reply(ok(req));
      if (req.op === "prepare") reply(ok(req, { name: req.name, state: "prepared", protocol: "2pc" }));
    });
    const writes = spyOnSocketWrites();
    const dtx = await client(fake.path);
    await dtx.beginDistributed("big-1", async (tx) => {
      await Promise.all(sizes.map((n, i) => tx.put(`blob/${i}`, new Uint8Array(n).fill(i + 1))));
    });
    expect(writes.some((w) => !w.accepted)).toBe(true); // the socket queued a write: the drain path really ran
    const puts = fake.requests.filter((r) => r.op === "put");
    expect(puts.map((r) => r.key)).toEqual(sizes.map((_, i) => `blob/${i}`));
    puts.forEach((r, i) => {
      expect(r.value.length).toBe(sizes[i]);
      expect(r.value[sizes[i] - 1]).toBe(i + 1);
    });
  });

  test("a reply with id 0 rejects every request in flight with its error", async () => {
    const fake = fakeSidecar((req, reply) => {
      if (req.id === 4) reply({ id: 0, ok: false, error: { code: "FRAME_TOO_LARGE", message: "frame over 16 MiB", retryable: false } });
    });
    const dtx = await client(fake.path);
    const results = await Promise.allSettled([dtx.get("a"), dtx.status("x"), dtx.get("c")]);
    for (const r of results) {
      expect(r.status).toBe("rejected");
      const reason = (r as PromiseRejectedResult).reason;
      expect(reason).toBeInstanceOf(ProtocolError);
      expect(reason.code).toBe("FRAME_TOO_LARGE");
    }
  });

  test("a lost connection cuts off a commit with OutcomeUnknownError, other calls with CONNECTION_LOST, then reconnects", async () => {
    const fake = fakeSidecar((req, reply) => {
      if (req.op === "list") reply(ok(req, { transactions: [] }));
    });
    const dtx = await client(fake.path);
    const commit = dtx.commitDistributed("order-42").catch((e) => e);
    const status = dtx.status("order-42").catch((e) => e);
    await fake.received("status");
    fake.dropAll();
    const [commitErr, statusErr] = await Promise.all([commit, status]);
    expect(commitErr).toBeInstanceOf(OutcomeUnknownError);
    expect(commitErr.message).toContain("order-42");
    expect(statusErr).toBeInstanceOf(ProtocolError);
    expect(statusErr.code).toBe("CONNECTION_LOST");

    expect(await dtx.list()).toEqual([]);
    expect(fake.connections).toBe(2);
    expect(fake.ops().filter((op) => op === "commit").length).toBe(1); // never resent
  });

  test("a call after the sidecar restarts waits for it and goes through on the new connection", async () => {
    const answer: Handle = (req, reply) => reply(ok(req, { found: true, value: 1 }));
    const first = fakeSidecar((req, reply) => req.key !== "cut" && answer(req, reply, undefined as never));
    const dtx = await client(first.path);
    const cut = dtx.get("cut").catch((e) => e);
    await first.received("get");
    first.stop();
    first.dropAll();
    expect(((await cut) as { code: string }).code).toBe("CONNECTION_LOST");
    let second: ReturnType<typeof fakeSidecar> | undefined;
    setTimeout(() => (second = fakeSidecar(answer, first.path)), 100); // the restart takes a while
    expect(await dtx.get("a")).toBe(1);
    expect(second?.ops()).toEqual(["hello", "get"]);
  });

  test("no more than requestsInFlightPerConnMax requests are in flight on one connection", async () => {
    const total = limits.requestsInFlightPerConnMax + 100;
    const held: Req[] = [];
    let maxHeld = 0;
    let received = 0;
    const fake = fakeSidecar((req, reply) => {
      received++;
      held.push(req);
      maxHeld = Math.max(maxHeld, held.length);
      // Hold the replies a moment: a client ignoring the bound would have sent more by then.
      if (held.length === limits.requestsInFlightPerConnMax) setTimeout(() => held.splice(0).forEach((r) => reply(ok(r, { found: false }))), 20);
      if (received === total) held.splice(0).forEach((r) => reply(ok(r, { found: false })));
    });
    const dtx = await client(fake.path);
    await Promise.all(Array.from({ length: total }, (_, i) => dtx.get(`k${i}`)));
    expect(maxHeld).toBe(limits.requestsInFlightPerConnMax);
  });

  test("with reconnect off, a call after the connection is lost rejects with CONNECTION_LOST", async () => {
    const fake = fakeSidecar();
    const dtx = await client(fake.path, { reconnect: false });
    const pending = dtx.get("a").catch((e) => e);
    await fake.received("get");
    fake.dropAll();
    expect(((await pending) as { code: string }).code).toBe("CONNECTION_LOST");
    const err = (await dtx.get("b").catch((e) => e)) as { code: string };
    expect(err.code).toBe("CONNECTION_LOST");
    expect(fake.connections).toBe(1);
  });

  test("connect gives up with CONNECTION_FAILED when no sidecar listens", async () => {
    const started = Date.now();
    const err = await connect({ socket: `${tmpdir()}/dtx-nobody-${process.pid}.sock`, connectTimeoutMs: 150 }).catch((e) => e);
    expect(err).toBeInstanceOf(ProtocolError);
    expect(err.code).toBe("CONNECTION_FAILED");
    expect(Date.now() - started).toBeLessThan(1000);
  });

  test("a reply that does not match its op's schema rejects that call with BAD_REPLY naming the field; the connection stays", async () => {
    const fake = fakeSidecar((req, reply) => {
      if (req.op === "commit") reply(ok(req, { name: req.name, outcome: "committed", protocol: "2pc" }));
      if (req.op === "get") reply(ok(req, { found: false }));
    });
    const dtx = await client(fake.path);
    const err = await dtx.commitDistributed("order-42").catch((e) => e);
    expect(err).toBeInstanceOf(ProtocolError);
    expect(err.code).toBe("BAD_REPLY");
    expect(err.message).toContain("commit");
    expect(err.message).toContain("pending");
    expect(await dtx.get("a")).toBeUndefined();
    expect(fake.connections).toBe(1);
  });

  test("fields a newer sidecar adds to a reply reach the caller", async () => {
    const fake = fakeSidecar((req, reply) => reply(ok(req, { name: req.name, outcome: "committed", protocol: "2pc", pending: [], committedAt: 7 })));
    const dtx = await client(fake.path);
    expect(await dtx.commitDistributed("order-42")).toEqual({ name: "order-42", outcome: "committed", protocol: "2pc", pending: [], committedAt: 7 });
  });

  test("a hello reply without the sidecar's id fails connect with BAD_REPLY", async () => {
    const path = `${tmpdir()}/dtx-client-${process.pid}-${seq++}.sock`;
    const server = Bun.listen({
      unix: path,
      socket: {
        data(s, chunk) {
          for (const ev of new FrameDecoder().push(chunk)) s.write(encodeFrame(ok(ev.kind === "body" ? (ev.body as Req) : ({ id: 0 } as Req), { version: PROTOCOL_VERSION, defaultTimeoutMs: 30_000 })));
        },
      },
    });
    cleanups.push(() => server.stop(true));
    const err = await connect({ socket: path }).catch((e) => e);
    expect(err).toBeInstanceOf(ProtocolError);
    expect(err.code).toBe("BAD_REPLY");
    expect(err.message).toContain("sidecar");
  });

  test("close rejects pending calls with CLIENT_CLOSED and refuses later ones", async () => {
    const fake = fakeSidecar();
    const dtx = await connect({ socket: fake.path });
    const pending = dtx.get("a").catch((e) => e);
    await fake.received("get");
    dtx.close();
    expect(((await pending) as { code: string }).code).toBe("CLIENT_CLOSED");
    expect(((await dtx.get("b").catch((e) => e)) as { code: string }).code).toBe("CLIENT_CLOSED");
    expect(fake.connections).toBe(1);
  });
});

describe("client transactions", () => {
  const txnSidecar = (prepare: (req: Req) => object = (req) => ok(req, { name: req.name, state: "prepared", protocol: "2pc" })) =>
    fakeSidecar((req, reply) => {
      switch (req.op) {
        case "begin":
          return reply(ok(req, { name: req.name, branch: "A:1", context: "ctx-token", protocol: "2pc" }));
        case "join":
          return reply(ok(req, { name: "order-42", branch: "B:1", coordinator: "A" }));
        case "get":
          return reply(ok(req, req.key === "stock/A" ? { found: true, value: 9 } : { found: false }));
        case "prepare":
          return reply(prepare(req));
        case "status":
          return reply(ok(req, statusView(req.name)));
        default:
          return reply(ok(req));
      }
    });

  test("beginDistributed runs the callback on a branch and sends its buffered writes with the prepare", async () => {
    const fake = txnSidecar();
    const dtx = await client(fake.path);
    let seen: unknown[] = [];
    let branch = "";
    const result = await dtx.beginDistributed(
      "order-42",
      async (tx) => {
        branch = tx.branch;
        await tx.put("orders/42", { sku: "A", qty: 1 });
        seen = [tx.name, tx.context, await tx.get("stock/A"), await tx.get("missing"), await tx.get("orders/42")];
        await tx.delete("tmp");
      },
      { protocol: "2pc", timeoutMs: 5000 },
    );
    expect(result).toEqual({ name: "order-42", state: "prepared", protocol: "2pc" });
    // The context token is made here, as the sidecar makes it, from its id (hello) and the branch id chosen here.
    // A read of its own write is answered from the buffer, as the sidecar would answer it.
    expect(seen).toEqual(["order-42", contextToken("order-42", "fake", branch, 5000), 9, undefined, { sku: "A", qty: 1 }]);
    expect(fake.ops()).toEqual(["hello", "begin", "get", "get", "prepare"]);
    const [, begin] = fake.requests;
    expect(begin).toEqual({ id: 2, op: "begin", name: "order-42", branch, protocol: "2pc", timeoutMs: 5000 });
    expect(fake.requests[4]).toEqual({
      id: 5,
      op: "prepare",
      name: "order-42",
      branch,
      writes: [
        ["orders/42", { sku: "A", qty: 1 }, false],
        ["tmp", null, true],
      ],
    });
  });

  test("a callback that only writes is begun and prepared by one request", async () => {
    const fake = txnSidecar();
    const dtx = await client(fake.path);
    let branch = "";
    const result = await dtx.beginDistributed(
      "order-46",
      (tx) => {
        branch = tx.branch;
        return tx.put("orders/46", 1);
      },
      { timeoutMs: 5000 },
    );
    expect(result).toEqual({ name: "order-46", state: "prepared", protocol: "2pc" });
    expect(fake.ops()).toEqual(["hello", "prepare"]);
    expect(fake.requests[1]).toEqual({
      id: 2,
      op: "prepare",
      name: "order-46",
      branch,
      begin: { timeoutMs: 5000, elapsedMs: expect.any(Number) },
      writes: [["orders/46", 1, false]],
    });
  });

  test("beginDistributed rolls back and rethrows when the callback throws", async () => {
    const fake = txnSidecar();
    const dtx = await client(fake.path);
    const boom = new Error("out of stock");
    const err = await dtx.beginDistributed("order-43", async (tx) => {
      await tx.get("stock/A");
      throw boom;
    }).catch((e) => e);
    expect(err).toBe(boom);
    expect(fake.ops()).toEqual(["hello", "begin", "get", "rollback"]);
    expect(fake.requests[3]).toMatchObject({ name: "order-43", branch: fake.requests[1].branch, reason: "out of stock" });
    // Nothing was begun on the sidecar: nothing to roll back there.
    const quiet = await dtx.beginDistributed("order-47", () => Promise.reject(boom)).catch((e) => e);
    expect(quiet).toBe(boom);
    expect(fake.ops()).toEqual(["hello", "begin", "get", "rollback"]);
  });

  test("a begin the sidecar refuses rejects beginDistributed with its error, not a later one's", async () => {
    const fake = fakeSidecar((req, reply) =>
      reply(req.op === "begin" ? fail(req, "NAME_IN_USE", "transaction \"order-48\" is prepared") : fail(req, "NOT_FOUND", "no such branch")),
    );
    const dtx = await client(fake.path);
    const err = await dtx.beginDistributed("order-48", (tx) => void tx.context).catch((e) => e);
    expect(err.code).toBe("NAME_IN_USE");
  });

  test("a conflict at prepare rejects beginDistributed with TransactionConflictError", async () => {
    const fake = txnSidecar((req) => fail(req, "TRANSACTION_CONFLICT", "stock/A changed", { participant: "A/store" }));
    const dtx = await client(fake.path);
    const err = await dtx.beginDistributed("order-44", async (tx) => void (await tx.get("stock/A"))).catch((e) => e);
    expect(err).toBeInstanceOf(TransactionConflictError);
    expect(err.retryable).toBe(true);
    expect(err.participant).toBe("A/store");
  });

  test("a write the sidecar refuses at prepare (LIMIT_EXCEEDED) rejects with its error and rolls the begun branch back", async () => {
    const fake = txnSidecar((req) => fail(req, "LIMIT_EXCEEDED", 'tx.put("k"): value is 2000000 bytes in MessagePack, over valueBytesMax (1048576 bytes)'));
    const dtx = await client(fake.path);
    let branch = "";
    const err = await dtx
      .beginDistributed("order-49", async (tx) => {
        branch = tx.branch;
        await tx.get("stock/A");
        await tx.put("k", 1);
      })
      .catch((e) => e);
    expect(err).toMatchObject({ code: "LIMIT_EXCEEDED", message: expect.stringContaining('tx.put("k")') });
    await fake.received("rollback");
    expect(fake.requests.find((r) => r.op === "rollback")).toMatchObject({ name: "order-49", branch });
  });

  test("a context token read after the callback returned begins nothing", async () => {
    const fake = txnSidecar();
    const dtx = await client(fake.path);
    let leaked: { context: string } | undefined;
    await dtx.beginDistributed("order-49", (tx) => tx.put("k", 1).then(() => void (leaked = tx)));
    expect(leaked!.context).toBe(contextToken("order-49", "fake", fake.requests[1].branch as string, 30_000));
    await dtx.status("order-49");
    expect(fake.ops()).toEqual(["hello", "prepare", "status"]);
  });

  test("tx used after its callback returned is refused locally", async () => {
    const fake = txnSidecar();
    const dtx = await client(fake.path);
    let leaked: { put(k: string, v: unknown): Promise<void> } | undefined;
    await dtx.beginDistributed("order-45", (tx) => void (leaked = tx));
    const err = await leaked!.put("late", 1).catch((e) => e);
    expect(err.code).toBe("INVALID_STATE");
    expect(fake.ops()).not.toContain("put");
  });

  const token = contextToken("order-42", "A", "A.cX", 30_000);

  test("join of a callback that only writes is one request: its end carries the token", async () => {
    const fake = txnSidecar();
    const dtx = await client(fake.path);
    let branch = "";
    const value = await dtx.join(token, async (tx) => {
      branch = tx.branch;
      await tx.put("stock/A", 8);
      return tx.context;
    });
    expect(value).toBe(token);
    expect(branch.startsWith("fake.c")).toBe(true);
    expect(fake.ops()).toEqual(["hello", "end"]);
    expect(fake.requests[1]).toEqual({ id: 2, op: "end", name: "order-42", branch, join: token, ok: true, writes: [["stock/A", 8, false]] });
  });

  test("join is sent first when the callback reads, and the end names the branch", async () => {
    const fake = txnSidecar();
    const dtx = await client(fake.path);
    let branch = "";
    await dtx.join(token, async (tx) => {
      branch = tx.branch;
      expect(await tx.get("stock/A")).toBe(9);
      await tx.put("stock/A", 8);
    });
    expect(fake.ops()).toEqual(["hello", "join", "get", "end"]);
    expect(fake.requests[1]).toEqual({ id: 2, op: "join", token, branch });
    expect(fake.requests[3]).toEqual({ id: 4, op: "end", name: "order-42", branch, ok: true, writes: [["stock/A", 8, false]] });
  });

  test("join ends the branch with ok false and the reason when the callback throws, joining first if it had not", async () => {
    const fake = txnSidecar();
    const dtx = await client(fake.path);
    const err = await dtx.join(token, () => Promise.reject(new Error("card declined"))).catch((e) => e);
    expect(err.message).toBe("card declined");
    expect(fake.requests[1]).toMatchObject({ op: "end", name: "order-42", join: token, ok: false, reason: "card declined" });
  });

  test("join refuses a token that is not one, without asking the sidecar", async () => {
    const fake = txnSidecar();
    const dtx = await client(fake.path);
    const err = await dtx.join("ctx-token", () => 1).catch((e) => e);
    expect(err.code).toBe("BAD_REQUEST");
    expect(fake.ops()).toEqual(["hello"]);
  });

  test("commitDistributed and rollbackDistributed return the sidecar's outcome", async () => {
    const fake = fakeSidecar((req, reply) => {
      if (req.op === "commit") reply(ok(req, { name: req.name, outcome: "committed", protocol: "2pc", pending: ["B"] }));
      if (req.op === "rollback") reply(fail(req, "NOT_FOUND", "no transaction order-9"));
    });
    const dtx = await client(fake.path);
    expect(await dtx.commitDistributed("order-42")).toEqual({ name: "order-42", outcome: "committed", protocol: "2pc", pending: ["B"] });
    const err = await dtx.rollbackDistributed("order-9").catch((e) => e);
    expect(err.code).toBe("NOT_FOUND");
  });
});

describe("client callbacks", () => {
  const call = { op: "callback", service: "payments", method: "execute", name: "order-42", participantId: "pay", idempotencyKey: "order-42/pay/execute", payload: { amount: 5 }, context: null, action: "charge" };
  /** After register, pushes each of `frames` to the client. */
  const serviceSidecar = (frames: object[], path?: string) =>
    fakeSidecar((req, reply) => {
      if (req.op === "register") {
        reply(ok(req, { service: req.service }));
        for (const f of frames) reply(f);
      } else reply(ok(req));
    }, path);

  test("a callback frame runs its handler, whose result goes back as callback_result", async () => {
    const fake = serviceSidecar([{ ...call, cb: 7 }]);
    const dtx = await client(fake.path);
    const seen: unknown[] = [];
    await dtx.register("payments", { action: (c) => (seen.push(c), { charged: 5 }) });
    await fake.received("callback_result");
    expect(seen).toEqual([{ name: "order-42", participantId: "pay", idempotencyKey: "order-42/pay/execute", payload: { amount: 5 }, context: null, action: "charge" }]);
    expect(fake.requests.find((r) => r.op === "callback_result")).toEqual({ id: 3, op: "callback_result", cb: 7, ok: true, result: { charged: 5 } });
  });

  test("register refuses a service name the sidecar would refuse before sending it, and serves nothing under it", async () => {
    const fake = fakeSidecar((req, reply) => req.key !== "held" && reply(ok(req, { found: false })));
    const dtx = await client(fake.path);
    const err = await dtx.register("pay ments", { action: () => null }).catch((e) => e);
    expect(err).toBeInstanceOf(ProtocolError);
    expect(err.code).toBe("BAD_REQUEST");
    expect(err.message).toContain("service must match");
    // Not kept to be registered again: the next connection's hello is followed by nothing of it.
    const held = dtx.get("held").catch((e) => e);
    await fake.received("get");
    fake.dropAll();
    expect(((await held) as { code: string }).code).toBe("CONNECTION_LOST");
    expect(await dtx.get("a")).toBeUndefined();
    expect(fake.ops()).toEqual(["hello", "get", "hello", "get"]);
  });

  test("a client that only serves callbacks dials again by itself when its sidecar goes, backing off, and registers again", async () => {
    const first = serviceSidecar([]);
    const dtx = await client(first.path);
    await dtx.register("payments", { action: () => ({ charged: 5 }) });
    first.stop();
    first.dropAll();
    // The sidecar's replacement hangs up on the first dials (it is still starting), then serves.
    const dials: number[] = [];
    const starting = Bun.listen({ unix: first.path, socket: { open: (s) => void (dials.push(performance.now()), s.terminate()), data() {} } });
    cleanups.push(() => starting.stop(true));
    await waitFor(() => dials.length >= 5, 5_000, "five dials");
    starting.stop(true);
    const second = serviceSidecar([{ ...call, cb: 9 }], first.path);
    await second.received("callback_result");
    // Nothing was called: the client dialed, said hello, registered and answered the sidecar's callback.
    expect(second.ops()).toEqual(["hello", "register", "callback_result"]);
    expect(second.requests.find((r) => r.op === "callback_result")).toMatchObject({ cb: 9, ok: true, result: { charged: 5 } });
    // Never a tight loop: each dial waits at least the client's backoff after the one before (20 ms, doubling).
    const gaps = dials.slice(1, 5).map((t, i) => t - dials[i]);
    gaps.forEach((gap, i) => expect(gap).toBeGreaterThanOrEqual(20 * 2 ** i - 2));
  });

  test("a callback frame the client cannot read fails for good, naming the field, and runs no handler", async () => {
    const { idempotencyKey: _, ...unreadable } = call;
    const fake = serviceSidecar([{ ...unreadable, cb: 8 }]);
    const dtx = await client(fake.path);
    let ran = false;
    await dtx.register("payments", { action: () => void (ran = true) });
    await fake.received("callback_result");
    expect(fake.requests.find((r) => r.op === "callback_result")).toMatchObject({ cb: 8, ok: false, retryable: false, error: expect.stringContaining("idempotencyKey") });
    expect(ran).toBe(false);
  });
});
