// The sidecar's database drivers, one suite run against each implementation
// (PostgreSQL, MariaDB XA) on the real servers.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { SQL } from "bun";
import { createDriver } from "../../src/participants/sql/branches.ts";
import type { SqlDriver } from "../../src/participants/sql/driver.ts";
import { xaXid } from "../../src/protocol/sql-branch.ts";
import { mysqlUrl, pgUrl, SqlAdmin, sqlTestGate, uniqueName } from "../fixtures/sql-servers.ts";
import { waitFor } from "../helpers/sidecar-process.ts";

const gate = await sqlTestGate("SQL driver tests (sql-drivers.test.ts)");
if (gate.missing) test("PostgreSQL and MariaDB are running for the SQL driver tests (CI=true)", () => expect(gate.missing).toBeUndefined());

const owner = uniqueName("drv").replace(/_/g, "-");
const table = uniqueName("dtx_drv");
let admin: SqlAdmin;

const kinds = [
  { kind: "postgres" as const, url: pgUrl, prepare: (a: SqlAdmin, gid: string, id: number) => a.preparePg(gid, table, id), rows: (a: SqlAdmin, id: number) => a.pg.unsafe(`SELECT 1 FROM ${table} WHERE id = ${id}`) },
  { kind: "mysql" as const, url: mysqlUrl, prepare: (a: SqlAdmin, gid: string, id: number) => a.prepareMy(gid, table, id), rows: (a: SqlAdmin, id: number) => a.my.unsafe(`SELECT 1 FROM ${table} WHERE id = ${id}`) },
];

/** Finish, waiting (bounded) while MariaDB still ties the branch to the connection that just prepared it and closed. */
async function settle(driver: SqlDriver, gid: string, outcome: "commit" | "rollback"): Promise<string> {
  let r = "busy";
  await waitFor(async () => (r = await driver.finish(gid, outcome)) !== "busy", 2_000, `MariaDB to release ${gid}`).catch(() => {});
  return r;
}

describe.skipIf(!gate.run)("SQL drivers", () => {
  beforeAll(async () => {
    admin = new SqlAdmin();
    await admin.pg.unsafe(`CREATE TABLE ${table} (id int PRIMARY KEY)`);
    await admin.my.unsafe(`CREATE TABLE ${table} (id int PRIMARY KEY) ENGINE=InnoDB`);
  });
  afterAll(async () => {
    await admin.cleanup(owner);
    await admin.dropAndClose([table], [table]);
  });

  for (const k of kinds) {
    describe(k.kind, () => {
      let driver: SqlDriver;
      const db = k.kind === "postgres" ? "orders" : "stock";
      const gid = (n: number) => `dtx:${owner}:b00${n}.1:${db}:t${n}`;
      beforeAll(() => {
        driver = createDriver({ name: db, url: k.url, kind: k.kind });
      });
      afterAll(() => driver.close());

      test("probe passes on a server that can prepare transactions", async () => {
        await driver.probe();
      });

      test("a prepared gid is listed; commit finishes it and makes its row visible; a second commit finds it unknown", async () => {
        await k.prepare(admin, gid(1), 1);
        expect(await driver.listPrepared()).toContain(gid(1));
        expect(await k.rows(admin, 1)).toHaveLength(0);
        expect(await settle(driver, gid(1), "commit")).toBe("finished");
        expect(await k.rows(admin, 1)).toHaveLength(1);
        expect(await driver.listPrepared()).not.toContain(gid(1));
        expect(await driver.finish(gid(1), "commit")).toBe("unknown");
      });

      test("rollback finishes a prepared gid and discards its row", async () => {
        await k.prepare(admin, gid(2), 2);
        expect(await settle(driver, gid(2), "rollback")).toBe("finished");
        expect(await k.rows(admin, 2)).toHaveLength(0);
        expect(await driver.finish(gid(2), "rollback")).toBe("unknown");
      });

      test("an unreachable server is SQL_CONNECTION_FAILED", async () => {
        const u = new URL(k.url);
        u.port = "1";
        const down = createDriver({ name: db, url: u.toString(), kind: k.kind });
        const err = await down.listPrepared().catch((e) => e);
        expect(err.code).toBe("SQL_CONNECTION_FAILED");
        expect(err.message).toContain(`database "${db}"`);
        await down.close();
      });
    });
  }

  test("MariaDB: a branch still attached to the connection that prepared it is busy, and finishes once that connection closes", async () => {
    const driver = createDriver({ name: "stock", url: mysqlUrl, kind: "mysql" });
    const g = `dtx:${owner}:b009.1:stock:t9`;
    const pool = new SQL(mysqlUrl, { max: 1 });
    const c = await pool.reserve();
    await c.unsafe(`XA START ${xaXid(g)}`);
    await c.unsafe(`INSERT INTO ${table} (id) VALUES (9)`);
    await c.unsafe(`XA END ${xaXid(g)}`);
    await c.unsafe(`XA PREPARE ${xaXid(g)}`);
    expect(await driver.finish(g, "commit")).toBe("busy");
    await c.close();
    await pool.close();
    expect(await settle(driver, g, "commit")).toBe("finished");
    await driver.close();
  });
});
