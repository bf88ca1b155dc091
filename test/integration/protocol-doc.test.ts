// docs/protocol.md's worked examples, walked on a raw socket: each section's frames are sent, byte for
// byte as the document writes them, to a real sidecar of its own (id "doc"), and every frame the sidecar
// sends back must be one the document shows, field for field (values marked "<…>" vary and match
// anything; a later request may use what they matched). The document's SQL statements run on the real
// databases, its MessagePack bytes are decoded (and, for "=", encoded) with the wire's codec, and its
// context token is decoded. The field tables are held to the schemas by test/unit/protocol-doc.test.ts.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { SQL, type Socket } from "bun";
import { readFileSync } from "node:fs";
import { clientRequest } from "../../src/protocol/messages.ts";
import { decodeBody, encodeBody, encodeFrame, FrameDecoder } from "../../src/protocol/frame.ts";
import { contextToken, decodeToken } from "../../src/protocol/token.ts";
import { docPath } from "../../scripts/protocol-doc.ts";
import { mysqlUrl, pgUrl, sqlTestGate } from "../fixtures/sql-servers.ts";
import { examples, isPlaceholder, type Section, type Step, toTagged } from "../helpers/protocol-doc-examples.ts";
import { SidecarProcess } from "../helpers/sidecar-process.ts";

const sections = examples(readFileSync(docPath, "utf8"));
const replyWaitMs = 10_000;
/** The databases the SQL section names (`--db orders=…`, `--db stock=…`), and the tables its statements use. */
const dbs = [`orders=${pgUrl}`, `stock=${mysqlUrl}`];
const tables = { pg: "protocol_doc_orders", my: "protocol_doc_stock" };

/** One raw connection: frames in arrival order, matched by id (or the first callback frame) when a step expects one. */
class RawConn {
  private readonly decoder = new FrameDecoder(Number.MAX_SAFE_INTEGER);
  private raw: Uint8Array = new Uint8Array(0); // what arrived and is not yet cut into frames
  readonly inbox: { body: unknown; bytes: Uint8Array }[] = [];
  closed = false;
  private wake?: () => void;
  private constructor(private readonly socket: Socket<undefined>) {}

  static async open(path: string): Promise<RawConn> {
    let conn!: RawConn;
    const socket = await Bun.connect({
      unix: path,
      socket: {
        data: (_s, chunk) => conn.received(chunk),
        close: () => conn.ended(),
      },
    });
    conn = new RawConn(socket);
    return conn;
  }

  private received(chunk: Uint8Array) {
    this.raw = Buffer.concat([this.raw, chunk]);
    for (const ev of this.decoder.push(chunk)) {
      if (ev.kind !== "body") throw new Error(`the sidecar sent ${ev.kind}`);
      this.inbox.push({ body: ev.body, bytes: this.raw.slice(0, 4 + ev.bytes) });
      this.raw = this.raw.slice(4 + ev.bytes);
    }
    this.wake?.();
  }

  private ended() {
    this.closed = true;
    this.wake?.();
  }

  write(bytes: Uint8Array) {
    this.socket.write(bytes);
  }

  /** The first frame `pick` accepts, waiting for it up to replyWaitMs. */
  async take(pick: (body: unknown) => boolean, what: string): Promise<{ body: unknown; bytes: Uint8Array }> {
    const deadline = Date.now() + replyWaitMs;
    for (;;) {
      const i = this.inbox.findIndex((f) => pick(f.body));
      if (i >= 0) return this.inbox.splice(i, 1)[0];
      if (this.closed) throw new Error(`${what}: the connection closed first`);
      if (!(await this.arrival(deadline))) throw new Error(`${what}: nothing within ${replyWaitMs} ms; received instead: ${JSON.stringify(toTagged(this.inbox.map((f) => f.body)))}`);
    }
  }

  async waitClosed(what: string) {
    const deadline = Date.now() + replyWaitMs;
    while (!this.closed) if (!(await this.arrival(deadline))) throw new Error(`${what}: the sidecar did not close the connection within ${replyWaitMs} ms`);
  }

  /** Resolves true when a frame arrives or the connection closes, false at `deadline`. */
  private arrival(deadline: number): Promise<boolean> {
    const left = deadline - Date.now();
    if (left <= 0) return Promise.resolve(false);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), left);
      this.wake = () => {
        clearTimeout(timer);
        resolve(true);
      };
    });
  }

  end() {
    this.socket.end();
  }
}

/** `expected` with every placeholder replaced by what `actual` holds there (remembered in `vars`), for an exact comparison. */
function unify(expected: unknown, actual: unknown, vars: Map<string, unknown>): unknown {
  if (isPlaceholder(expected)) {
    vars.set(expected, actual);
    return actual;
  }
  if (Array.isArray(expected)) return expected.map((e, i) => unify(e, Array.isArray(actual) ? actual[i] : undefined, vars));
  if (expected !== null && typeof expected === "object" && !(expected instanceof Date) && !(expected instanceof Uint8Array)) {
    const a = (actual ?? {}) as Record<string, unknown>;
    return Object.fromEntries(Object.entries(expected).map(([k, e]) => [k, unify(e, a[k], vars)]));
  }
  return expected;
}

/** A request with placeholders replaced by what earlier replies held there. */
function substitute(body: unknown, vars: Map<string, unknown>, line: number): unknown {
  if (isPlaceholder(body)) {
    if (!vars.has(body)) throw new Error(`docs/protocol.md:${line}: ${body} is used before a reply showed it`);
    return vars.get(body);
  }
  if (Array.isArray(body)) return body.map((b) => substitute(b, vars, line));
  if (body !== null && typeof body === "object" && !(body instanceof Date) && !(body instanceof Uint8Array)) {
    return Object.fromEntries(Object.entries(body).map(([k, b]) => [k, substitute(b, vars, line)]));
  }
  return body;
}

/** Tagged JSON with sorted keys: what an exact comparison and its message read (bigint, Date, bytes, undefined told apart). */
const shown = (v: unknown): string => JSON.stringify(sortKeys(toTagged(v)));
function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v !== null && typeof v === "object") return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortKeys((v as Record<string, unknown>)[k])]));
  return v;
}
const hex = (b: Uint8Array) => Buffer.from(b).toString("hex").replace(/(..)(?!$)/g, "$1 ");

async function runSql(step: Extract<Step, { k: "sql" }>, vars: Map<string, unknown>) {
  const url = vars.get(step.url);
  if (typeof url !== "string") throw new Error(`docs/protocol.md:${step.line}: ${step.url} is not a database URL an earlier reply showed`);
  const pool = new SQL(url, { max: 1 });
  const conn = await pool.reserve();
  try {
    for (const s of step.statements) await conn.unsafe(s);
  } finally {
    await conn.close(); // MariaDB finishes a prepared XA branch elsewhere only once this connection closed
    await pool.close();
  }
}

async function walk(section: Section, sidecar: SidecarProcess | undefined) {
  const conns = new Map<string, RawConn>();
  const vars = new Map<string, unknown>();
  const conn = async (name: string) => {
    let c = conns.get(name);
    if (!c) {
      if (!sidecar) throw new Error(`${section.title}: a wire example needs a sidecar`);
      c = await RawConn.open(sidecar.socket);
      conns.set(name, c);
    }
    return c;
  };
  try {
    for (const step of section.steps) {
      const at = `docs/protocol.md:${step.line}`;
      switch (step.k) {
        case "send": {
          if (step.as !== undefined) expect(shown(decodeBody(step.bytes!.subarray(4))), `${at}: what the bytes decode to`).toBe(shown(step.as));
          (await conn(step.conn)).write(step.bytes ?? encodeFrame(substitute(step.body, vars, step.line)));
          break;
        }
        case "expect": {
          const c = await conn(step.conn);
          if (step.closed) {
            await c.waitClosed(at);
            break;
          }
          const want = step.bytes ? decodeBody(step.bytes.subarray(4)) : step.body;
          const id = (want as { id?: unknown }).id;
          const got = await c.take((b) => (typeof id === "number" ? (b as { id?: unknown })?.id === id : (b as { op?: unknown })?.op === "callback"), `${at}: ${step.conn} waits for ${typeof id === "number" ? `the reply ${id}` : "a callback frame"}`);
          if (step.bytes) expect(hex(got.bytes), `${at}: the frame's bytes`).toBe(hex(step.bytes));
          else expect(shown(got.body), at).toBe(shown(unify(want, got.body, vars)));
          break;
        }
        case "sql":
          await runSql(step, vars);
          break;
        case "value":
          expect(shown(decodeBody(step.bytes)), `${at}: what the bytes decode to`).toBe(shown(step.value));
          if (!step.decodeOnly) expect(hex(encodeBody(step.value)), `${at}: how the codec writes it`).toBe(hex(step.bytes));
          break;
        case "token": {
          expect(JSON.parse(Buffer.from(step.token, "base64url").toString("utf8")), `${at}: the token's JSON`).toEqual(step.json);
          const t = decodeToken(step.token);
          expect(t, `${at}: the sidecar reads the token`).toBeDefined();
          expect(contextToken(t!.name, t!.coordinator, t!.incarnation!, t!.timeoutMs!, t!.traceparent), `${at}: the token the client and the sidecar make`).toBe(step.token);
          break;
        }
      }
    }
    // Every frame the sidecar sent is one the document shows.
    for (const [name, c] of conns) expect(c.inbox.map((f) => shown(f.body)), `${section.title}: frames ${name} received that the document does not show`).toEqual([]);
  } finally {
    for (const c of conns.values()) c.end();
  }
}

const needsSidecar = (s: Section) => s.steps.some((x) => x.k === "send");
const needsDatabases = (s: Section) => s.steps.some((x) => x.k === "sql");

let sql: { run: boolean; missing?: string } = { run: false };
let admin: { pg: SQL; my: SQL } | undefined;
beforeAll(async () => {
  if (!sections.some(needsDatabases)) return;
  sql = await sqlTestGate("docs/protocol.md's SQL branch examples");
  if (!sql.run) return;
  admin = { pg: new SQL(pgUrl, { max: 1 }), my: new SQL(mysqlUrl, { max: 1 }) };
  // Leftovers of a run that was killed: the examples' gids are fixed.
  for (const { gid } of await admin.pg`SELECT gid FROM pg_prepared_xacts WHERE gid LIKE 'dtx:doc:%'`) await admin.pg.unsafe(`ROLLBACK PREPARED '${gid}'`);
  await admin.pg.unsafe(`DROP TABLE IF EXISTS ${tables.pg}`);
  await admin.pg.unsafe(`CREATE TABLE ${tables.pg} (id int PRIMARY KEY, sku text)`);
  await admin.my.unsafe(`DROP TABLE IF EXISTS ${tables.my}`);
  await admin.my.unsafe(`CREATE TABLE ${tables.my} (sku varchar(16) PRIMARY KEY, qty int) ENGINE=InnoDB`);
  await admin.my.unsafe(`INSERT INTO ${tables.my} VALUES ('A', 10)`);
});
afterAll(async () => {
  if (!admin) return;
  await admin.pg.unsafe(`DROP TABLE IF EXISTS ${tables.pg}`);
  await admin.my.unsafe(`DROP TABLE IF EXISTS ${tables.my}`);
  await admin.pg.close();
  await admin.my.close();
});

describe("docs/protocol.md, walked on a raw socket", () => {
  test("the document has examples, and every op is sent in at least one of them", () => {
    const sent = new Set(sections.flatMap((s) => s.steps.flatMap((x) => (x.k === "send" && x.body ? [(x.body as { op?: string }).op] : []))));
    const ops = clientRequest.options.map((o) => o.shape.op.value);
    expect(ops.filter((op) => !sent.has(op))).toEqual([]);
  });

  for (const section of sections) {
    test(`${section.title} (docs/protocol.md:${section.line})`, async () => {
      if (needsDatabases(section) && !sql.run) {
        if (sql.missing) throw new Error(`the databases are missing under CI: ${sql.missing}`);
        return; // sqlTestGate printed why
      }
      const sidecar = needsSidecar(section) ? await new SidecarProcess({ id: "doc", dbs: needsDatabases(section) ? dbs : [] }).start() : undefined;
      try {
        await walk(section, sidecar);
      } finally {
        await sidecar?.cleanup();
      }
    }, 60_000);
  }
});
