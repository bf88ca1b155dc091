// Every op on real sidecars, by hand over the socket, each raw reply held to its schema in
// src/protocol/replies.ts (and every error body and callback frame to theirs), so the engine and the
// schemas the client reads with cannot drift apart: a field the schema lacks fails here as well as one
// the engine stopped sending, although the client itself lets unknown fields pass.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { SQL, type Socket } from "bun";
import { z } from "zod";
import { PROTOCOL_VERSION } from "../../src/limits.ts";
import { wireErrorSchema } from "../../src/protocol/errors.ts";
import { encodeFrame, FrameDecoder } from "../../src/protocol/frame.ts";
import { type ClientOp, describeZodError } from "../../src/protocol/messages.ts";
import { callbackFrame, replies } from "../../src/protocol/replies.ts";
import { pgGidLiteral } from "../../src/protocol/sql-branch.ts";
import { pgUrl, sqlTestGate } from "../fixtures/sql-servers.ts";
import { freePorts, waitForLinks } from "../helpers/federation.ts";
import { SidecarProcess } from "../helpers/sidecar-process.ts";

type Body = Record<string, any>;

/** A connection that speaks the protocol by hand: replies come back unread, callback frames go to `onCallback`. */
async function rawClient(socket: string, onCallback: (frame: Body) => void = () => {}) {
  const decoder = new FrameDecoder();
  const waiting = new Map<number, (reply: Body) => void>();
  let lastId = 0;
  const s: Socket<undefined> = await Bun.connect({
    unix: socket,
    socket: {
      data(_s, chunk) {
        for (const ev of decoder.push(chunk)) {
          if (ev.kind !== "body") throw new Error(`the sidecar sent ${ev.kind}`);
          const body = ev.body as Body;
          if (body.op === "callback") onCallback(body);
          else waiting.get(body.id)?.(body);
        }
      },
    },
  });
  return {
    request(op: ClientOp, args: Body = {}): Promise<Body> {
      const id = ++lastId;
      s.write(encodeFrame({ id, op, ...args }));
      return new Promise((resolve) => waiting.set(id, resolve));
    },
    close: () => s.end(),
  };
}
type RawClient = Awaited<ReturnType<typeof rawClient>>;

/** Fields of `value` that `schema` does not name: replies are loose, so parsing alone lets them pass. */
function undeclared(schema: z.ZodType, value: unknown, at = ""): string[] {
  if (schema instanceof z.ZodOptional || schema instanceof z.ZodNullable) return value == null ? [] : undeclared(schema.unwrap() as z.ZodType, value, at);
  if (schema instanceof z.ZodArray) return Array.isArray(value) ? value.flatMap((v, i) => undeclared(schema.element as z.ZodType, v, `${at}[${i}]`)) : [];
  if (schema instanceof z.ZodUnion) {
    const match = (schema.options as z.ZodType[]).find((o) => o.safeParse(value).success);
    return match ? undeclared(match, value, at) : [];
  }
  if (schema instanceof z.ZodObject && value !== null && typeof value === "object") {
    const shape = schema.shape as Record<string, z.ZodType>;
    return Object.entries(value).flatMap(([k, v]) => (k in shape ? undeclared(shape[k], v, `${at}${at && "."}${k}`) : [`${at}${at && "."}${k}`]));
  }
  return [];
}

/** What `schema` finds wrong with `value`: nothing, when it matches and names every field. */
function problems(schema: z.ZodType, value: unknown) {
  const read = schema.safeParse(value);
  return { mismatch: read.success ? undefined : describeZodError(read.error), undeclared: undeclared(schema, value) };
}

/** The ops whose replies the running test has held to their schemas. */
let checked = new Set<string>();
/** The ops some test below walks; the last test asks that every op is among them. */
const walked: ClientOp[] = [];

/** A test that sends `ops` (among others) and holds every reply of theirs to its schema. */
function walk(what: string, ops: ClientOp[], run: () => Promise<void>, skip = false): void {
  walked.push(...ops);
  test.skipIf(skip)(what, async () => {
    checked = new Set();
    await run();
    expect(ops.filter((op) => !checked.has(op))).toEqual([]);
  });
}

/** The ok-body of `reply`, after holding it to the schema of `op`. */
function okBody(op: ClientOp, reply: Body): Body {
  const { id: _id, ok, ...body } = reply;
  expect({ op, ok, refused: ok ? undefined : body.error }).toEqual({ op, ok: true, refused: undefined });
  expect({ op, ...problems(replies[op], body) }).toEqual({ op, mismatch: undefined, undeclared: [] });
  checked.add(op);
  return body;
}

function errorBody(reply: Body, code: string): void {
  expect({ ok: reply.ok, code: reply.error?.code }).toEqual({ ok: false, code });
  expect(problems(wireErrorSchema, reply.error)).toEqual({ mismatch: undefined, undeclared: [] });
}

const gate = await sqlTestGate("the SQL replies (replies.test.ts)");
if (gate.missing) test("PostgreSQL and MariaDB are running for the SQL replies (CI=true)", () => expect(gate.missing).toBeUndefined());

const [portA, portB] = freePorts(2);
let A: SidecarProcess;
let B: SidecarProcess;
let a: RawClient;
let b: RawClient;
let service: RawClient;
const frames: Body[] = [];
const answers: Promise<Body>[] = [];

beforeAll(async () => {
  A = new SidecarProcess({ id: "RA", port: portA, peers: [`RB=ws://127.0.0.1:${portB}`], dbs: gate.run ? [`pg=${pgUrl}`] : [] });
  B = new SidecarProcess({ id: "RB", port: portB, peers: [`RA=ws://127.0.0.1:${portA}`] });
  await Promise.all([A.start(), B.start()]);
  await Promise.all([waitForLinks(A, ["RB"]), waitForLinks(B, ["RA"])]);
  [a, b] = await Promise.all([rawClient(A.socket), rawClient(B.socket)]);
  // A service: answers every call it is pushed with its method's name.
  service = await rawClient(A.socket, (frame) => {
    frames.push(frame);
    answers.push(service.request("callback_result", { cb: frame.cb, ok: true, result: { ran: frame.method } }));
  });
});
afterAll(async () => {
  for (const c of [a, b, service]) c?.close();
  await A?.cleanup();
  await B?.cleanup();
});

describe("every reply matches its schema", () => {
  walk("2PC across two sidecars: hello, begin, get, put, delete, join, end, prepare, status on both, list, commit on either", ["hello", "begin", "get", "put", "delete", "join", "end", "prepare", "status", "list", "commit"], async () => {
    for (const c of [a, b, service]) okBody("hello", await c.request("hello", { version: PROTOCOL_VERSION, client: "replies.test" }));
    okBody("get", await a.request("get", { key: "walk/a" }));
    const begun = okBody("begin", await a.request("begin", { name: "walk-2pc", timeoutMs: 30_000 }));
    const branch = begun.branch;
    okBody("get", await a.request("get", { name: "walk-2pc", branch, key: "walk/a" }));
    okBody("put", await a.request("put", { name: "walk-2pc", branch, key: "walk/a", value: { n: 1 } }));
    okBody("get", await a.request("get", { name: "walk-2pc", branch, key: "walk/a" }));
    okBody("delete", await a.request("delete", { name: "walk-2pc", branch, key: "walk/gone" }));
    const joined = okBody("join", await b.request("join", { token: begun.context }));
    okBody("end", await b.request("end", { name: "walk-2pc", branch: joined.branch, ok: true, writes: [["walk/b", 2, false]] }));
    okBody("prepare", await a.request("prepare", { name: "walk-2pc", branch }));
    okBody("status", await a.request("status", { name: "walk-2pc" })); // the coordinator, every branch
    okBody("status", await b.request("status", { name: "walk-2pc" })); // a sidecar holding only a branch
    okBody("list", await a.request("list", {}));
    okBody("commit", await b.request("commit", { name: "walk-2pc" })); // forwarded to the coordinator, its answer relayed
    okBody("commit", await a.request("commit", { name: "walk-2pc" })); // asked again
    expect(okBody("get", await a.request("get", { key: "walk/a" }))).toEqual({ found: true, value: { n: 1 } });
    okBody("status", await b.request("status", { name: "walk-2pc" })); // finished, from B's log
  });

  walk("rollback, and resolve of a prepared transaction", ["rollback", "resolve"], async () => {
    const begun = okBody("begin", await a.request("begin", { name: "walk-rollback" }));
    okBody("rollback", await a.request("rollback", { name: "walk-rollback", branch: begun.branch, reason: "walking" }));
    okBody("prepare", await a.request("prepare", { name: "walk-resolve", begin: { elapsedMs: 0 }, writes: [["walk/r", 1, false]] }));
    expect(okBody("resolve", await a.request("resolve", { name: "walk-resolve", outcome: "commit" }))).toMatchObject({ outcome: "committed" });
  });

  walk("a SQL branch: sql_open, then sql_prepared once PostgreSQL holds it prepared", ["sql_open", "sql_prepared"], async () => {
    const begun = okBody("begin", await a.request("begin", { name: "walk-sql" }));
    const opened = okBody("sql_open", await a.request("sql_open", { name: "walk-sql", branch: begun.branch, db: "pg" }));
    const pg = new SQL(pgUrl, { max: 1 });
    try {
      const conn = await pg.reserve();
      await conn.unsafe("BEGIN");
      await conn.unsafe(`PREPARE TRANSACTION ${pgGidLiteral(opened.gid)}`);
      conn.release();
    } finally {
      await pg.close();
    }
    okBody("sql_prepared", await a.request("sql_prepared", { name: "walk-sql", branch: begun.branch, db: "pg", gid: opened.gid }));
    okBody("prepare", await a.request("prepare", { name: "walk-sql", branch: begun.branch }));
    okBody("rollback", await a.request("rollback", { name: "walk-sql" })); // the sidecar rolls PostgreSQL back before it answers
  }, !gate.run);

  walk("orchestrated: register, o_create, o_add, o_execute (the callback frames and their callback_result), status, resolve, o_abort, recover", ["register", "o_create", "o_add", "o_execute", "callback_result", "status", "resolve", "o_abort", "recover"], async () => {
    okBody("register", await service.request("register", { service: "walker" }));
    okBody("o_create", await a.request("o_create", { name: "walk-saga", protocol: "saga", context: { order: 1 } }));
    okBody("o_add", await a.request("o_add", { name: "walk-saga", participant: { participantId: "svc", endpoint: "service:walker", action: "charge", payload: { amount: 5 } } }));
    okBody("o_add", await a.request("o_add", { name: "walk-saga", participant: { participantId: "st", endpoint: "store:", payload: { put: { "walk/saga": 1 } } } }));
    expect(okBody("o_execute", await a.request("o_execute", { name: "walk-saga" }))).toMatchObject({ outcome: "committed", protocol: "saga" });
    expect(frames.map((f) => f.method)).toEqual(["execute"]);
    for (const f of frames) expect(problems(callbackFrame, f)).toEqual({ mismatch: undefined, undeclared: [] });
    for (const r of await Promise.all(answers)) okBody("callback_result", r);
    okBody("status", await a.request("status", { name: "walk-saga" }));
    okBody("list", await a.request("list", {}));
    expect(okBody("resolve", await a.request("resolve", { name: "walk-saga", outcome: "commit" }))).toMatchObject({ outcome: "committed" });
    okBody("o_create", await a.request("o_create", { name: "walk-abort" }));
    okBody("o_abort", await a.request("o_abort", { name: "walk-abort", reason: "walking" })); // never executed
    okBody("status", await a.request("status", { name: "walk-abort" }));
    okBody("recover", await a.request("recover"));
  });

  walk("peers", ["peers"], async () => {
    expect(okBody("peers", await a.request("peers")).peers).toMatchObject([{ id: "RB", state: "up" }]);
  });

  test("error bodies: refused at the door, by the engine, and relayed from another sidecar", async () => {
    errorBody(await a.request("status", { name: "walk-nobody" }), "NOT_FOUND");
    errorBody(await a.request("begin", { name: "walk 2pc" }), "BAD_REQUEST");
    errorBody(await a.request("commit", { name: "walk-rollback" }), "TRANSACTION_ABORTED");
    errorBody(await b.request("commit", { name: "walk-rollback" }), "TRANSACTION_ABORTED");
    errorBody(await a.request("begin", { name: "walk-held", protocol: "saga" }), "PROTOCOL_UNSUPPORTED");
  });

  test("every op is walked above", () => {
    expect(Object.keys(replies).filter((op) => !walked.includes(op as ClientOp))).toEqual([]);
  });
});
