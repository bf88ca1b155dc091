// One transaction across the built-in store, a PostgreSQL table and a MariaDB
// table, on a real sidecar process: it commits everywhere or nowhere.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { type Client, connect, SqlError } from "../../client/index.ts";
import { mysqlUrl, pgUrl, SqlAdmin, sqlTestGate, uniqueName } from "../fixtures/sql-servers.ts";
import { SidecarProcess, waitFor } from "../helpers/sidecar-process.ts";

const gate = await sqlTestGate("SQL integration tests (sql.test.ts)");
if (gate.missing) test("PostgreSQL and MariaDB are running for the SQL tests (CI=true)", () => expect(gate.missing).toBeUndefined());

const sidecarId = uniqueName("sqlA").replace(/_/g, "-");
const orders = uniqueName("dtx_orders");
const parents = uniqueName("dtx_parents");
const stock = uniqueName("dtx_stock");
let admin: SqlAdmin;
let sc: SidecarProcess;
let dtx: Client;

describe.skipIf(!gate.run)("SQL branches (PostgreSQL + MariaDB)", () => {
  beforeAll(async () => {
    admin = new SqlAdmin();
    await admin.pg.unsafe(`CREATE TABLE ${parents} (id int PRIMARY KEY)`);
    await admin.pg.unsafe(`CREATE TABLE ${orders} (id int PRIMARY KEY, sku text, parent int REFERENCES ${parents}(id) DEFERRABLE INITIALLY DEFERRED)`);
    await admin.my.unsafe(`CREATE TABLE ${stock} (id int PRIMARY KEY, qty int) ENGINE=InnoDB`);
    sc = await new SidecarProcess({ id: sidecarId, dbs: [`orders=${pgUrl}`, `stock=${mysqlUrl}`], extraArgs: ["--sql-reconcile-ms", "500"] }).start();
    dtx = await connect({ socket: sc.socket });
  });

  afterAll(async () => {
    dtx?.close();
    await sc?.cleanup();
    await admin.cleanup(sidecarId);
    await admin.dropAndClose([orders, parents], [stock]);
  });

  const pgRows = async (id: number) => (await admin.pg.unsafe(`SELECT sku FROM ${orders} WHERE id = ${id}`)).length;
  const myRows = async (id: number) => (await admin.my.unsafe(`SELECT qty FROM ${stock} WHERE id = ${id}`)).length;
  const noGidsLeft = () => waitFor(async () => {
    const g = await admin.gids(sidecarId);
    return g.pg.length === 0 && g.my.length === 0;
  }, 10_000, "no dtx gids left in pg_prepared_xacts and XA RECOVER");

  async function writeEverywhere(tx: Parameters<Parameters<Client["beginDistributed"]>[1]>[0], id: number) {
    await tx.put(`orders/${id}`, { id });
    await tx.sql("orders")`INSERT INTO ${tx.sql("orders")(orders)} (id, sku) VALUES (${id}, ${"A"})`;
    await tx.sql("stock")`INSERT INTO ${tx.sql("stock")(stock)} (id, qty) VALUES (${id}, ${9})`;
  }

  test("prepared: invisible everywhere and held by both databases under gids naming the sidecar; commit makes it visible everywhere", async () => {
    await dtx.beginDistributed("sql-commit", (tx) => writeEverywhere(tx, 1));
    expect(await dtx.get("orders/1")).toBeUndefined();
    expect(await pgRows(1)).toBe(0);
    expect(await myRows(1)).toBe(0);
    const held = await admin.gids(sidecarId);
    expect(held.pg).toHaveLength(1);
    expect(held.my).toHaveLength(1);
    expect(held.pg[0]).toMatch(new RegExp(`^dtx:${sidecarId}:.+:orders:sql-commit$`));
    expect(held.my[0]).toMatch(new RegExp(`^dtx:${sidecarId}:.+:stock:sql-commit$`));

    // Decided means done: when commitDistributed returns, both databases have committed (no waiting here).
    expect(await dtx.commitDistributed("sql-commit")).toMatchObject({ outcome: "committed", pending: [] });
    expect(await pgRows(1)).toBe(1);
    expect(await myRows(1)).toBe(1);
    expect(await admin.gids(sidecarId)).toEqual({ pg: [], my: [] });
    expect(await dtx.get("orders/1")).toEqual({ id: 1 });
  });

  test("rollbackDistributed after prepare rolls back the store and both databases before it returns", async () => {
    await dtx.beginDistributed("sql-rollback", (tx) => writeEverywhere(tx, 2));
    expect(await dtx.rollbackDistributed("sql-rollback")).toMatchObject({ outcome: "rolled_back", pending: [] });
    expect(await admin.gids(sidecarId)).toEqual({ pg: [], my: [] });
    expect(await dtx.get("orders/2")).toBeUndefined();
    expect(await pgRows(2)).toBe(0);
    expect(await myRows(2)).toBe(0);
  });

  test("a callback that throws rolls back everywhere and beginDistributed rejects with its error", async () => {
    const boom = new Error("callback failed");
    const err = await dtx
      .beginDistributed("sql-throw", async (tx) => {
        await writeEverywhere(tx, 3);
        throw boom;
      })
      .catch((e) => e);
    expect(err).toBe(boom);
    await noGidsLeft();
    expect((await dtx.status("sql-throw")).state).toBe("rolled_back");
    expect(await dtx.get("orders/3")).toBeUndefined();
    expect(await pgRows(3)).toBe(0);
    expect(await myRows(3)).toBe(0);
  });

  test("PostgreSQL refusing to prepare (a deferred constraint fails) rolls back the store and MariaDB too", async () => {
    const err = await dtx
      .beginDistributed("sql-pg-refuses", async (tx) => {
        await tx.put("orders/4", { id: 4 });
        await tx.sql("stock")`INSERT INTO ${tx.sql("stock")(stock)} (id, qty) VALUES (${4}, ${1})`;
        await tx.sql("orders")`INSERT INTO ${tx.sql("orders")(orders)} (id, sku, parent) VALUES (${4}, ${"A"}, ${999})`; // no parent 999: fails at PREPARE
      })
      .catch((e) => e);
    expect(err).toBeInstanceOf(SqlError);
    expect(err.code).toBe("SQL_PREPARE_FAILED");
    expect(err.db).toBe("orders");
    expect(err.message).toContain("foreign key");
    await noGidsLeft();
    expect((await dtx.status("sql-pg-refuses")).state).toBe("rolled_back");
    expect(await dtx.get("orders/4")).toBeUndefined();
    expect(await pgRows(4)).toBe(0);
    expect(await myRows(4)).toBe(0);
  });

  test("MariaDB failing to prepare (its connection was killed) rolls back the store and PostgreSQL too", async () => {
    const err = await dtx
      .beginDistributed("sql-my-fails", async (tx) => {
        await writeEverywhere(tx, 5);
        const [{ id }] = await tx.sql("stock")`SELECT CONNECTION_ID() AS id`;
        await admin.my.unsafe(`KILL ${Number(id)}`);
      })
      .catch((e) => e);
    expect(err).toBeInstanceOf(SqlError);
    expect(["SQL_CONNECTION_FAILED", "SQL_PREPARE_FAILED"]).toContain(err.code);
    expect(err.db).toBe("stock");
    await noGidsLeft();
    expect(await dtx.get("orders/5")).toBeUndefined();
    expect(await pgRows(5)).toBe(0);
    expect(await myRows(5)).toBe(0);
  });

  test("a service joining on its own connection adds its SQL branch to the same transaction", async () => {
    const other = await connect({ socket: sc.socket });
    try {
      await dtx.beginDistributed("sql-join", async (tx) => {
        await tx.sql("orders")`INSERT INTO ${tx.sql("orders")(orders)} (id, sku) VALUES (${6}, ${"B"})`;
        await other.join(tx.context, async (t) => {
          await t.sql("stock")`INSERT INTO ${t.sql("stock")(stock)} (id, qty) VALUES (${6}, ${2})`;
        });
      });
      expect((await admin.gids(sidecarId)).my).toHaveLength(1);
      await dtx.commitDistributed("sql-join");
      await noGidsLeft();
      expect(await pgRows(6)).toBe(1);
      expect(await myRows(6)).toBe(1);
    } finally {
      other.close();
    }
  });

  test("a database the sidecar does not know is SQL_DB_UNKNOWN and the transaction rolls back", async () => {
    const err = await dtx
      .beginDistributed("sql-unknown-db", async (tx) => {
        await tx.put("orders/7", 7);
        await tx.sql("nope")`SELECT 1`;
      })
      .catch((e) => e);
    expect(err).toBeInstanceOf(SqlError);
    expect(err.code).toBe("SQL_DB_UNKNOWN");
    expect(err.message).toContain("orders, stock");
    expect((await dtx.status("sql-unknown-db")).state).toBe("rolled_back");
  });

  test("tx.sql's helpers and results read the same on PostgreSQL and MariaDB: rows in, rows by IN out, counts beside them", async () => {
    const seen: Record<string, unknown> = {};
    await dtx.beginDistributed("sql-helpers", async (tx) => {
      for (const [db, table, rows] of [["orders", orders, [{ id: 20, sku: "A" }, { id: 21, sku: "B" }]], ["stock", stock, [{ id: 20, qty: 1 }, { id: 21, qty: 2 }]]] as const) {
        const q = tx.sql(db);
        const inserted = await q`INSERT INTO ${q(table)} ${q(rows)}`;
        const read = await q`SELECT id FROM ${q(table)} WHERE id IN ${q([20, 21])} ORDER BY id`;
        seen[db] = { kind: await q.kind(), affected: inserted.affectedRows, rows: [...read], count: read.count };
      }
    });
    expect(seen).toEqual({
      orders: { kind: "postgres", affected: 2, rows: [{ id: 20 }, { id: 21 }], count: 2 },
      stock: { kind: "mysql", affected: 2, rows: [{ id: 20 }, { id: 21 }], count: 2 },
    });
    await dtx.rollbackDistributed("sql-helpers");
    await noGidsLeft();
  });

  test("tx.sql after the callback returned is refused", async () => {
    let kept: ReturnType<Parameters<Parameters<Client["beginDistributed"]>[1]>[0]["sql"]> | undefined;
    await dtx.beginDistributed("sql-late", async (tx) => {
      kept = tx.sql("orders");
      await kept`SELECT 1`;
    });
    const err = await kept!`SELECT 1`.catch((e: unknown) => e);
    expect((err as { code: string }).code).toBe("INVALID_STATE");
    await dtx.rollbackDistributed("sql-late");
    await noGidsLeft();
  });
});
