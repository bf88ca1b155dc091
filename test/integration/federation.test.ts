// Real sidecar processes federated over WebSocket: a transaction begun on one
// sidecar and joined on another commits or rolls back as one, and a peer that
// cannot prove the shared secret is refused before anything it sends is read.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { type Client, connect, TransactionAbortedError } from "../../client/index.ts";
import pino from "pino";
import { peerMac } from "../../src/federation/auth.ts";
import { Federation } from "../../src/federation/federation.ts";
import { federationLimits } from "../../src/federation/link.ts";
import { FEDERATION_VERSION, PROTOCOL_VERSION } from "../../src/limits.ts";
import { decodeBody, encodeBody } from "../../src/protocol/frame.ts";
import { freePorts, peersOf, RawPeer, waitForLinks } from "../helpers/federation.ts";
import { SidecarProcess, tempDir, waitFor } from "../helpers/sidecar-process.ts";

const secret = "federation-test-secret";
const dir = tempDir("dtx-fed-");
const secretFile = join(dir, "secret");
const wrongSecretFile = join(dir, "wrong-secret");
writeFileSync(secretFile, `${secret}\n`);
writeFileSync(wrongSecretFile, "not-the-secret\n");

const [portA, portB, portC, portD] = freePorts(4);
const url = (port: number) => `ws://127.0.0.1:${port}`;
let A: SidecarProcess;
let B: SidecarProcess;
let a: Client;
let b: Client;
const started: SidecarProcess[] = [];
const clients: Client[] = [];

async function sidecar(id: string, port: number, peers: string[], secretPath = secretFile): Promise<SidecarProcess> {
  const sc = new SidecarProcess({ id, port, peers, secretFile: secretPath });
  started.push(sc);
  return sc.start();
}

async function client(sc: SidecarProcess): Promise<Client> {
  const c = await connect({ socket: sc.socket });
  clients.push(c);
  return c;
}

beforeAll(async () => {
  [A, B] = await Promise.all([sidecar("A", portA, [`B=${url(portB)}`]), sidecar("B", portB, [`A=${url(portA)}`])]);
  await Promise.all([waitForLinks(A, ["B"]), waitForLinks(B, ["A"])]);
  [a, b] = await Promise.all([client(A), client(B)]);
});

afterAll(async () => {
  for (const c of clients) c.close();
  for (const s of started) await s.cleanup();
});

/** Begin on A (writing aKey), join on B (writing bKey): the transaction is prepared on both. */
async function prepareAcross(name: string, aKey: string, bKey: string, value: unknown) {
  return a.beginDistributed(name, async (tx) => {
    await tx.put(aKey, value);
    await b.join(tx.context, async (t2) => {
      await t2.put(bKey, value);
    });
  });
}

/** The branch a coordinator on A recorded for sidecar `sidecar`. */
async function branchOn(name: string, sidecar: string): Promise<string> {
  const st = await a.status(name);
  const p = st.participants.find((x) => x.sidecar === sidecar);
  if (!p) throw new Error(`${name} has no branch on ${sidecar}: ${JSON.stringify(st)}`);
  return p.branch as string;
}

describe("federated 2PC between two sidecars", () => {
  test("each sidecar reports an authenticated link to the other", async () => {
    expect((await peersOf(A)).find((p) => p.id === "B")).toMatchObject({ state: "up", url: `${url(portB)}/v1/federation` });
    expect((await peersOf(B)).find((p) => p.id === "A")).toMatchObject({ state: "up" });
  });

  test("a transaction begun on A and joined on B commits on both sidecars", async () => {
    expect(await prepareAcross("fed-commit-1", "acct/a1", "acct/b1", 100)).toMatchObject({ state: "prepared" });
    const st = await a.status("fed-commit-1");
    expect(st.participants.map((p) => p.sidecar).sort()).toEqual(["A", "B"]);
    expect(await b.get("acct/b1")).toBeUndefined();
    expect(await a.commitDistributed("fed-commit-1")).toEqual({ name: "fed-commit-1", outcome: "committed", protocol: "2pc", pending: [] });
    expect(await a.get("acct/a1")).toBe(100);
    // commitDistributed waits for every reachable branch's ack, so B has applied it.
    expect(await b.get("acct/b1")).toBe(100);
  });

  test("any client of the coordinator decides; B's branch answers status with the outcome", async () => {
    await prepareAcross("fed-commit-2", "acct/a2", "acct/b2", "x");
    const other = await client(A);
    await other.commitDistributed("fed-commit-2");
    expect(await b.get("acct/b2")).toBe("x");
    expect((await b.status("fed-commit-2")).state).toBe("committed");
  });

  test("rollbackDistributed discards the writes on both sidecars", async () => {
    await prepareAcross("fed-rollback-1", "acct/a3", "acct/b3", 1);
    expect(await a.rollbackDistributed("fed-rollback-1")).toEqual({ name: "fed-rollback-1", outcome: "rolled_back", protocol: "2pc", pending: [] });
    expect(await a.get("acct/a3")).toBeUndefined();
    expect(await b.get("acct/b3")).toBeUndefined();
    await waitFor(async () => (await b.status("fed-rollback-1")).state === "rolled_back", 5_000, "B's branch rolled back");
  });

  test("a joined callback on B that throws rolls the whole transaction back", async () => {
    const err = await a
      .beginDistributed("fed-throw-1", async (tx) => {
        await tx.put("acct/a4", 4);
        await b
          .join(tx.context, async (t2) => {
            await t2.put("acct/b4", 4);
            throw new Error("insufficient funds on B");
          })
          .catch(() => {});
      })
      .catch((e) => e);
    expect(err).toBeInstanceOf(TransactionAbortedError);
    expect(err.message).toContain("insufficient funds on B");
    expect((await a.status("fed-throw-1")).state).toBe("rolled_back");
    expect(await a.get("acct/a4")).toBeUndefined();
    expect(await b.get("acct/b4")).toBeUndefined();
  });

  test("a prepared branch on B survives kill -9 of B and commits once B is back", async () => {
    await prepareAcross("fed-crash-1", "acct/a5", "acct/b5", 5);
    await B.kill9();
    await B.start();
    await waitForLinks(A, ["B"]);
    const c = await client(B);
    expect((await c.status("fed-crash-1")).state).toBe("prepared");
    await a.commitDistributed("fed-crash-1");
    await waitFor(async () => (await c.get("acct/b5")) === 5, 5_000, "B applied the commit after its restart");
    expect(await a.get("acct/a5")).toBe(5);
  });

  test("a prepare sent while the joined sidecar is down is resent once it is back, so the vote comes without waiting out timeoutMs", async () => {
    let downAt = 0;
    const result = await a
      .beginDistributed(
        "fed-lost-prepare-1",
        async (tx) => {
          await tx.put("acct/a8", 8);
          await b.join(tx.context, (t2) => t2.put("acct/b8", 8));
          await B.kill9();
          downAt = Date.now();
          // Down longer than a queued message is kept, so the first prepare is lost for good.
          setTimeout(() => void B.start(), federationLimits.peerQueueAgeMaxMs + 500);
        },
        { timeoutMs: 30_000 },
      )
      .catch((e) => e);
    // B prepares its branch when the callback ends and is killed right after: if its prepared record was durable
    // by then, the resent prepare finds it prepared and it votes yes again; if not, the branch is unknown and it
    // votes no. Either way the answer comes once B is back, not after timeoutMs (30 s).
    expect(Date.now() - downAt).toBeLessThan(15_000);
    if (result instanceof Error) {
      expect(result).toBeInstanceOf(TransactionAbortedError);
      expect(result.message).toContain("unknown on sidecar B");
    } else {
      expect(result).toMatchObject({ state: "prepared" });
      await a.rollbackDistributed("fed-lost-prepare-1");
    }
    await waitForLinks(A, ["B"]);
    expect(await a.get("acct/a8")).toBeUndefined();
    expect(await b.get("acct/b8")).toBeUndefined();
  });

  test("names reused as soon as their transaction finishes: every transfer commits, though a token may reach A before its begin", async () => {
    // Each worker names its transactions round-robin from three names, so A still holds the finished
    // transaction of a name when the next one of that name begins, and B's enlist may arrive first.
    const [as, bs] = await Promise.all([Promise.all([1, 2, 3, 4].map(() => client(A))), Promise.all([1, 2, 3, 4].map(() => client(B)))]);
    const workers = 16;
    const rounds = 24;
    await Promise.all(
      Array.from({ length: workers }, async (_, w) => {
        const [ca, cb] = [as[w % 4], bs[w % 4]];
        for (let i = 0; i < rounds; i++) {
          const name = `reuse-${w}-${i % 3}`;
          await ca.beginDistributed(name, async (tx) => {
            await tx.put(`reuse/a/${w}`, i);
            await cb.join(tx.context, (t2) => t2.put(`reuse/b/${w}`, i));
          });
          await ca.commitDistributed(name);
        }
      }),
    );
    for (let w = 0; w < workers; w++) {
      expect(await a.get(`reuse/a/${w}`)).toBe(rounds - 1);
      expect(await b.get(`reuse/b/${w}`)).toBe(rounds - 1);
    }
  });

  test("links a peer dialed work both ways: C lists only A, A does not list C", async () => {
    const C = await sidecar("C", portC, [`A=${url(portA)}`]);
    await waitForLinks(A, ["C"]);
    expect((await peersOf(A)).find((p) => p.id === "C")).toMatchObject({ state: "up", url: null, accepted: 1 });
    const c = await client(C);
    // C joins A's transaction: enlist goes out on C's link, prepare and decision come back on it.
    await a.beginDistributed("fed-accepted-1", async (tx) => {
      await tx.put("acct/a6", 6);
      await c.join(tx.context, (t2) => t2.put("acct/c6", 6));
    });
    await a.commitDistributed("fed-accepted-1");
    expect(await c.get("acct/c6")).toBe(6);
    // A joins C's transaction: A has no --peer C, so it reaches C over the link C dialed.
    await c.beginDistributed("fed-accepted-2", async (tx) => {
      await tx.put("acct/c7", 7);
      await a.join(tx.context, (t2) => t2.put("acct/a7", 7));
    });
    await c.commitDistributed("fed-accepted-2");
    expect(await a.get("acct/a7")).toBe(7);
    expect(await c.get("acct/c7")).toBe(7);
  });
});

describe("peer authentication", () => {
  test("a sidecar with the wrong secret is refused, logged with its id and address, and never linked", async () => {
    const D = await sidecar("D", portD, [`A=${url(portA)}`], wrongSecretFile);
    await waitFor(() => /"level":40[^\n]*"peer":"D"[^\n]*"remote":"127\.0\.0\.1"[^\n]*wrong mac/.test(A.output), 10_000, "A's warn line about D");
    await waitFor(() => /"level":40[^\n]*"peer":"A"[^\n]*peer refused our link/.test(D.output), 10_000, "D's warn line about A refusing it");
    expect((await peersOf(A)).some((p) => p.id === "D")).toBe(false);
    expect((await peersOf(D)).find((p) => p.id === "A")?.state).not.toBe("up");
    await D.cleanup();
  });

  test("a socket that sends a decision without authenticating is closed and the decision is not applied", async () => {
    await prepareAcross("fed-noauth-1", "auth/a1", "auth/b1", 1);
    const branch = await branchOn("fed-noauth-1", "B");
    const raw = await RawPeer.open(B.port);
    await raw.next("challenge");
    raw.send({ t: "decision", name: "fed-noauth-1", branch, from: "A", outcome: "commit" });
    const closed = await raw.closedWith();
    expect(closed.code).toBe(4001);
    expect(closed.reason).toContain("unauthorized");
    expect((await b.status("fed-noauth-1")).state).toBe("prepared");
    expect(await b.get("auth/b1")).toBeUndefined();
    await a.rollbackDistributed("fed-noauth-1");
    expect(await b.get("auth/b1")).toBeUndefined();
  });

  test("a socket with a wrong mac is refused before its enlist or decision is read", async () => {
    await prepareAcross("fed-badmac-1", "auth/a2", "auth/b2", 2);
    const branch = await branchOn("fed-badmac-1", "B");
    const raw = await RawPeer.open(B.port);
    await raw.authenticate("A", "guessed-secret");
    raw.send({ t: "decision", name: "fed-badmac-1", branch, from: "A", outcome: "commit" });
    raw.send({ t: "enlist", name: "fed-badmac-1", branch: "forged", from: "A" });
    const closed = await raw.closedWith();
    expect(closed.code).toBe(4001);
    expect(closed.reason).toContain("wrong mac");
    expect(raw.received.map((m) => m.t)).toEqual(["challenge"]);
    await waitFor(() => /"level":40[^\n]*"peer":"A"[^\n]*"remote":"127\.0\.0\.1"[^\n]*wrong mac/.test(B.output), 5_000, "B's warn line");
    expect((await b.status("fed-badmac-1")).state).toBe("prepared");
    expect(await b.get("auth/b2")).toBeUndefined();
    expect((await a.status("fed-badmac-1")).participants.length).toBe(2);
    await a.rollbackDistributed("fed-badmac-1");
  });

  test("the accepting side proves the secret too: its welcome carries a mac over the dialer's nonce", async () => {
    const raw = await RawPeer.open(B.port);
    const challenge = await raw.authenticate("X", secret);
    expect(challenge).toMatchObject({ t: "challenge", v: FEDERATION_VERSION, id: "B" });
    const welcome = await raw.next("welcome");
    expect(welcome).toEqual({ t: "welcome", id: "B", mac: peerMac(secret, "0123456789abcdef0123456789abcdef", "B") });
    raw.ws.close();
  });

  test("an authenticated peer's invalid messages and messages naming another sender are dropped; its link stays up", async () => {
    await prepareAcross("fed-invalid-1", "auth/a3", "auth/b3", 3);
    const branch = await branchOn("fed-invalid-1", "B");
    const raw = await RawPeer.open(B.port);
    await raw.authenticate("X", secret);
    await raw.next("welcome");
    raw.ws.send(new Uint8Array([0xc1])); // never valid MessagePack
    raw.ws.send("a text message");
    raw.send({ t: "decision", name: "not a valid name!", branch, from: "X", outcome: "commit" });
    raw.send({ t: "teleport", name: "fed-invalid-1", branch, from: "X" });
    raw.send({ t: "decision", name: "fed-invalid-1", branch, from: "A", outcome: "commit" }); // X speaking for A
    // Still up, and replies to a peer with no --peer entry go back over the link it dialed.
    raw.send({ t: "query", name: "fed-unknown-1", branch: "x.1", from: "X" });
    expect(await raw.next("decision")).toEqual({ t: "decision", name: "fed-unknown-1", branch: "x.1", from: "B", outcome: "rollback" });
    expect(raw.closed).toBeUndefined();
    expect((await b.status("fed-invalid-1")).state).toBe("prepared");
    expect(await b.get("auth/b3")).toBeUndefined();
    expect((await peersOf(B)).find((p) => p.id === "X")).toMatchObject({ state: "up", invalid: 5 });
    expect(B.output).toContain("a message claiming to be from A");
    raw.ws.close();
    await a.rollbackDistributed("fed-invalid-1");
  });

  test("a peer message with a field its protocol version does not have is refused by name and not applied", async () => {
    await prepareAcross("fed-strict-1", "auth/a4", "auth/b4", 4);
    const branch = await branchOn("fed-strict-1", "B");
    const raw = await RawPeer.open(B.port);
    // As X, not A: a second link in A's name would race A's own. Without the strict check B would apply this.
    await raw.authenticate("X", secret);
    await raw.next("welcome");
    raw.send({ t: "decision", name: "fed-strict-1", branch, from: "X", outcome: "commit", force: true });
    const error = await raw.next("error");
    expect(error).toMatchObject({ t: "error", code: "BAD_REQUEST" });
    expect(String(error.message)).toContain("force: unknown field");
    expect((await b.status("fed-strict-1")).state).toBe("prepared");
    expect(await b.get("auth/b4")).toBeUndefined();
    raw.ws.close();
    await a.rollbackDistributed("fed-strict-1");
  });

  test("a batch delivers each valid message in it and drops only the invalid ones; a malformed batch is dropped whole", async () => {
    const raw = await RawPeer.open(B.port);
    await raw.authenticate("Y", secret);
    await raw.next("welcome");
    raw.send({ t: "batch", msgs: "not an array" });
    raw.send({
      t: "batch",
      msgs: [
        { t: "teleport", name: "fed-batch-1", branch: "y.1", from: "Y" },
        { t: "query", name: "fed-batch-1", branch: "y.1", from: "Y" },
        { t: "query", name: "fed-batch-2", branch: "y.2", from: "Y" },
      ],
    });
    await waitFor(() => raw.received.filter((m) => m.t === "decision").length === 2, 5_000, "both queries answered");
    expect(raw.received.filter((m) => m.t === "decision")).toEqual([
      { t: "decision", name: "fed-batch-1", branch: "y.1", from: "B", outcome: "rollback" },
      { t: "decision", name: "fed-batch-2", branch: "y.2", from: "B", outcome: "rollback" },
    ]);
    expect((await peersOf(B)).find((p) => p.id === "Y")).toMatchObject({ state: "up", invalid: 2 });
    raw.ws.close();
  });

  test("a message over frameBytesMax closes the link with 1009", async () => {
    const raw = await RawPeer.open(B.port);
    await raw.authenticate("X", secret);
    await raw.next("welcome");
    raw.ws.send(new Uint8Array(16 * 1024 * 1024 + 1));
    expect((await raw.closedWith()).code).toBe(1009);
  });
});

describe("the dialing side checks the accepting side's proof", () => {
  test("a listener that answers with a wrong welcome mac is refused and never linked", async () => {
    const lines: string[] = [];
    const log = pino({ level: "debug" }, { write: (s: string) => void lines.push(s) });
    // An impostor that knows the protocol but not the secret.
    const impostor = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch: (req, server) => (server.upgrade(req) ? undefined : new Response("no", { status: 400 })),
      websocket: {
        open: (ws) => void ws.sendBinary(encodeBody({ t: "challenge", v: FEDERATION_VERSION, id: "B", nonce: "00112233445566778899aabbccddeeff" })),
        message: (ws, data) => {
          const auth = decodeBody(data as Uint8Array) as { nonce: string };
          ws.sendBinary(encodeBody({ t: "welcome", id: "B", mac: peerMac("guessed", auth.nonce, "B") }));
          ws.sendBinary(encodeBody({ t: "decision", name: "forged-1", branch: "b.1", from: "B", outcome: "commit" }));
        },
      },
    });
    const delivered: unknown[] = [];
    const fed = new Federation({ self: "A", secret, peers: [{ id: "B", url: `ws://127.0.0.1:${impostor.port}/v1/federation` }], log, deliver: (m) => delivered.push(m) });
    fed.start();
    try {
      await waitFor(() => lines.some((l) => l.includes("did not prove the shared secret")), 5_000, "the dialer's refusal");
      expect(fed.peers()[0].state).not.toBe("up");
      expect(delivered).toEqual([]);
    } finally {
      fed.stop();
      impostor.stop(true);
    }
  });
});

describe("trace context", () => {
  test("a traceparent given to beginDistributed is on every log line about the transaction, on both sidecars", async () => {
    const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const [p1, p2] = freePorts(2);
    const T1 = new SidecarProcess({ id: "T1", port: p1, secretFile, peers: [`T2=${url(p2)}`], extraArgs: ["--log-level", "debug"] });
    const T2 = new SidecarProcess({ id: "T2", port: p2, secretFile, peers: [`T1=${url(p1)}`], extraArgs: ["--log-level", "debug"] });
    await Promise.all([T1.start(), T2.start()]);
    await waitForLinks(T1, ["T2"]);
    const c1 = await connect({ socket: T1.socket });
    const c2 = await connect({ socket: T2.socket });
    await c1.beginDistributed(
      "traced-1",
      async (tx) => {
        await tx.put("trace/a", 1);
        await c2.join(tx.context, (t) => t.put("trace/b", 2));
      },
      { traceparent: tp },
    );
    await c1.commitDistributed("traced-1");
    await waitFor(() => /"name":"traced-1"[^\n]*"record":"p.end"/.test(T2.output), 5_000, "T2's p.end line");
    for (const sc of [T1, T2]) {
      const lines = sc.output.split("\n").filter((l) => l.includes('"name":"traced-1"'));
      expect(lines.length).toBeGreaterThanOrEqual(2);
      for (const l of lines) expect(l).toContain(`"traceparent":"${tp}"`);
    }
    c1.close();
    c2.close();
    await T1.cleanup();
    await T2.cleanup();
  });
});

describe("deciding from any sidecar", () => {
  test("a client of another sidecar commits a prepared transaction: its sidecar asks the coordinator", async () => {
    await a.beginDistributed("fed-anyone-1", async (tx) => {
      await tx.put("anyone/a", 1);
      await b.join(tx.context, (t) => t.put("anyone/b", 2));
    });
    // B holds a branch of it, so it knows A coordinates.
    expect(await b.commitDistributed("fed-anyone-1")).toMatchObject({ name: "fed-anyone-1", outcome: "committed", protocol: "2pc" });
    expect(await a.get("anyone/a")).toBe(1);
    expect(await b.get("anyone/b")).toBe(2);
    expect(await b.commitDistributed("fed-anyone-1")).toMatchObject({ outcome: "committed" });
  });

  test("a sidecar with no branch of the transaction finds its coordinator among its peers", async () => {
    await a.beginDistributed("fed-anyone-2", (tx) => tx.put("anyone/c", 3));
    expect(await b.rollbackDistributed("fed-anyone-2")).toMatchObject({ outcome: "rolled_back" });
    expect((await a.status("fed-anyone-2")).state).toBe("rolled_back");
    await expect(b.commitDistributed("fed-anyone-2")).rejects.toBeInstanceOf(TransactionAbortedError);
  });

  test("a name no sidecar coordinates is NOT_FOUND after asking every peer", async () => {
    const err = await b.commitDistributed("fed-nobody").catch((e) => e);
    expect(err.code).toBe("NOT_FOUND");
  });
});
