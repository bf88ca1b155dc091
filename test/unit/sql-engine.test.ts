// SQL branches in the pure engine: what Node.step logs, votes and asks the
// runtime to finish. The log is a MemoryWal durable at once.
import { describe, expect, test } from "bun:test";
import type { PeerMessage } from "../../src/protocol/messages.ts";
import { Node } from "../../src/txn/node.ts";
import type { ClientInput, Effect } from "../../src/txn/types.ts";
import { MemoryWal } from "../../src/wal/memory-wal.ts";

type Request = { [Op in ClientInput["op"]]: Omit<Extract<ClientInput, { op: Op }>, "id"> }[ClientInput["op"]];
const databases = new Map([
  ["orders", { kind: "postgres" as const, url: "postgres://u@127.0.0.1:5432/o" }],
  ["stock", { kind: "mysql" as const, url: "mysql://u@127.0.0.1:3306/s" }],
]);

class Harness {
  node: Node;
  now = 1_000;
  private reqId = 0;
  constructor(readonly wal = new MemoryWal(true)) {
    this.node = new Node({ id: "A", bootId: "b1", reader: wal, databases });
  }
  step(input: Parameters<Node["step"]>[0]): Effect[] {
    const effects = this.node.step(input);
    const records = effects.flatMap((e) => (e.k === "persist" ? [e.rec] : []));
    if (records.length) this.wal.write(records);
    // Messages to itself, as the runtime delivers them.
    const self = effects.flatMap((e) => (e.k === "send" && e.to === "A" ? [e.msg] : []));
    return [...effects, ...self.flatMap((msg: PeerMessage) => this.step({ k: "peer", msg, now: this.now }))];
  }
  client(req: Request, conn = 1): Effect[] {
    return this.step({ k: "client", from: { conn, id: ++this.reqId }, req: { ...req, id: this.reqId } as ClientInput, now: this.now });
  }
  restart(): Effect[] {
    this.node = new Node({ id: "A", bootId: "b2", reader: this.wal, databases });
    return this.step({ k: "recover", ...this.wal.unfinished(), now: this.now });
  }
}

function replies(effects: Effect[]) {
  return effects.flatMap((e) => (e.k === "reply" ? [e.body as { ok: boolean; error?: { code: string; message: string }; [k: string]: unknown }] : []));
}
const finishes = (effects: Effect[]) => effects.flatMap((e) => (e.k === "finish_sql" ? [e] : []));

function begin(h: Harness, name: string): string {
  const [r] = replies(h.client({ op: "begin", name }));
  return r.branch as string;
}

function openSql(h: Harness, name: string, branch: string, db: string) {
  const effects = h.client({ op: "sql_open", name, branch, db });
  return { effects, reply: replies(effects)[0] };
}

describe("SQL branches in the engine", () => {
  test("sql_open logs the resource before replying with a gid naming the sidecar, branch, db and transaction", () => {
    const h = new Harness();
    const branch = begin(h, "t1");
    const { effects, reply } = openSql(h, "t1", branch, "orders");
    const kinds = effects.map((e) => e.k);
    expect(kinds.indexOf("persist")).toBeLessThan(kinds.indexOf("reply"));
    expect(reply).toMatchObject({ ok: true, db: "orders", kind: "postgres", url: databases.get("orders")!.url, gid: `dtx:A:b1.1:orders:t1` });
    expect(h.wal.branch("t1", branch)).toMatchObject({ state: "active", resources: [{ db: "orders", gid: "dtx:A:b1.1:orders:t1" }] });
  });

  test("an unknown database is SQL_DB_UNKNOWN, a second open of one database is SQL_GID_DUPLICATE", () => {
    const h = new Harness();
    const branch = begin(h, "t2");
    expect(openSql(h, "t2", branch, "nope").reply.error?.code).toBe("SQL_DB_UNKNOWN");
    openSql(h, "t2", branch, "stock");
    expect(openSql(h, "t2", branch, "stock").reply.error?.code).toBe("SQL_GID_DUPLICATE");
  });

  test("prepare with a SQL branch never reported prepared votes no, naming the database, and rolls it back durably", () => {
    const h = new Harness();
    const branch = begin(h, "t3");
    openSql(h, "t3", branch, "orders");
    const effects = h.client({ op: "prepare", name: "t3" });
    const r = replies(effects)[0];
    expect(r.error?.code).toBe("TRANSACTION_ABORTED");
    expect(r.error?.message).toContain(`database "orders"`);
    expect(finishes(effects)).toEqual([{ k: "finish_sql", name: "t3", branch, resources: [{ db: "orders", gid: "dtx:A:b1.1:orders:t3", kind: "postgres" }], outcome: "rollback" }]);
    expect(h.wal.branch("t3", branch)?.state).toBe("rolled_back");
  });

  test("a branch whose only work is SQL is not read-only: it prepares, and commit finishes its databases after p.end", () => {
    const h = new Harness();
    const branch = begin(h, "t4");
    const gid = openSql(h, "t4", branch, "stock").reply.gid as string;
    expect(replies(h.client({ op: "sql_prepared", name: "t4", branch, db: "stock", gid }))[0].ok).toBe(true);
    expect(replies(h.client({ op: "prepare", name: "t4" }))[0]).toMatchObject({ ok: true, state: "prepared" });
    expect(h.wal.branch("t4", branch)).toMatchObject({ state: "prepared", resources: [{ gid }] });
    const effects = h.client({ op: "commit", name: "t4" });
    const kinds = effects.map((e) => (e.k === "persist" ? e.rec.r : e.k));
    expect(kinds.indexOf("p.end")).toBeLessThan(kinds.indexOf("finish_sql"));
    expect(finishes(effects)).toEqual([{ k: "finish_sql", name: "t4", branch, resources: [{ db: "stock", gid, kind: "mysql" }], outcome: "commit" }]);
    // Decided means done: the commit answers once the database finished the branch, not before.
    expect(replies(effects)).toEqual([]);
    expect(replies(h.step({ k: "sql_finished", name: "t4", branch, ok: true, now: h.now }))[0]).toMatchObject({ ok: true, outcome: "committed", pending: [] });
  });

  test("a commit whose database cannot finish the branch yet answers after ackWaitMs with this sidecar pending, and acks once it is finished", () => {
    const h = new Harness();
    const branch = begin(h, "t4b");
    const gid = openSql(h, "t4b", branch, "orders").reply.gid as string;
    h.client({ op: "sql_prepared", name: "t4b", branch, db: "orders", gid });
    h.client({ op: "prepare", name: "t4b" });
    expect(replies(h.client({ op: "commit", name: "t4b" }))).toEqual([]);
    expect(replies(h.step({ k: "sql_finished", name: "t4b", branch, ok: false, now: h.now }))).toEqual([]);
    // A resent decision tries the database again, and still no ack while it is unfinished.
    h.now += 1_000;
    const resent = h.step({ k: "tick", now: h.now });
    expect(finishes(resent)).toHaveLength(1);
    h.now += 5_000;
    expect(replies(h.step({ k: "tick", now: h.now }))[0]).toMatchObject({ ok: true, outcome: "committed", pending: ["A"] });
    h.step({ k: "sql_finished", name: "t4b", branch, ok: true, now: h.now });
    expect(h.node.coords.get("t4b")?.state).toBe("committed");
  });

  test("after a restart, a prepared SQL branch is in doubt and keeps its resources; a registered, unprepared one is rolled back", () => {
    const h = new Harness();
    const prepared = begin(h, "t5");
    const gid5 = openSql(h, "t5", prepared, "orders").reply.gid as string;
    h.client({ op: "sql_prepared", name: "t5", branch: prepared, db: "orders", gid: gid5 });
    h.client({ op: "prepare", name: "t5" });
    const active = begin(h, "t6");
    const gid6 = openSql(h, "t6", active, "orders").reply.gid as string;

    const effects = h.restart();
    expect(finishes(effects)).toEqual([{ k: "finish_sql", name: "t6", branch: active, resources: [{ db: "orders", gid: gid6, kind: "postgres" }], outcome: "rollback" }]);
    expect(h.wal.branch("t6", active)?.state).toBe("rolled_back");
    expect(h.node.branches.get(`t5/${prepared}`)?.resources).toEqual([{ db: "orders", gid: gid5, kind: "postgres", prepared: true }]);
    expect(finishes(h.client({ op: "rollback", name: "t5" }))[0]).toMatchObject({ outcome: "rollback", resources: [{ gid: gid5 }] });
  });

  test("a SQL branch reported prepared after its transaction rolled back is finished at once", () => {
    const h = new Harness();
    const branch = begin(h, "t7");
    const gid = openSql(h, "t7", branch, "orders").reply.gid as string;
    h.step({ k: "disconnect", conn: 1, now: h.now });
    const effects = h.client({ op: "sql_prepared", name: "t7", branch, db: "orders", gid }, 2);
    expect(replies(effects)[0].error?.code).toBe("TRANSACTION_ABORTED");
    expect(finishes(effects)).toEqual([{ k: "finish_sql", name: "t7", branch, resources: [{ db: "orders", gid, kind: "postgres" }], outcome: "rollback" }]);
  });
});
