// dtx/kysely on the real PostgreSQL and MariaDB, under node (the built client) and under Bun (the
// sources): the seed's provision_user_123 and batch_txn examples, and one Kysely transaction across
// both databases and the store that commits everywhere or nowhere. The service is
// test/consumer/kysely.mjs; this file checks what the databases hold afterwards.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mysqlUrl, pgUrl, SqlAdmin, sqlTestGate, uniqueName } from "../fixtures/sql-servers.ts";
import { runConsumer, runtimes } from "../helpers/consumer.ts";
import { SidecarProcess } from "../helpers/sidecar-process.ts";

const gate = await sqlTestGate("Kysely tests (kysely.test.ts)");
if (gate.missing) test("PostgreSQL and MariaDB are running for the Kysely tests (CI=true)", () => expect(gate.missing).toBeUndefined());

const sidecarId = uniqueName("kysely").replace(/_/g, "-");
let admin: SqlAdmin;
let sc: SidecarProcess;
const pgTables: string[] = [];
const myTables: string[] = [];

describe.skipIf(!gate.run)("dtx/kysely", () => {
  beforeAll(async () => {
    admin = new SqlAdmin();
    sc = await new SidecarProcess({ id: sidecarId, dbs: [`orders=${pgUrl}`, `stock=${mysqlUrl}`] }).start();
  });

  afterAll(async () => {
    await sc?.cleanup();
    await admin.cleanup(sidecarId);
    await admin.dropAndClose(pgTables, myTables);
  });

  const noGids = async () => expect(await admin.gids(sidecarId)).toEqual({ pg: [], my: [] });

  for (const rt of runtimes) {
    describe(`on ${rt.name}`, () => {
      const t = {
        users: uniqueName(`dtx_users_${rt.name}`),
        jobs: uniqueName(`dtx_jobs_${rt.name}`),
        parents: uniqueName(`dtx_parents_${rt.name}`),
        orders: uniqueName(`dtx_korders_${rt.name}`),
        stock: uniqueName(`dtx_kstock_${rt.name}`),
      };
      const run = (scenario: string, name: string) => runConsumer(rt, "kysely.mjs", [scenario, name, JSON.stringify(t)], { DTX_SOCKET: sc.socket });

      beforeAll(async () => {
        pgTables.push(t.users, t.jobs, t.orders, t.parents);
        myTables.push(t.stock);
        await admin.pg.unsafe(`CREATE TABLE ${t.users} (id int PRIMARY KEY, status text NOT NULL)`);
        await admin.pg.unsafe(`CREATE TABLE ${t.jobs} (id int PRIMARY KEY)`);
        await admin.pg.unsafe(`CREATE TABLE ${t.parents} (id int PRIMARY KEY)`);
        await admin.pg.unsafe(`CREATE TABLE ${t.orders} (id int PRIMARY KEY, sku text, parent int REFERENCES ${t.parents}(id) DEFERRABLE INITIALLY DEFERRED)`);
        await admin.my.unsafe(`CREATE TABLE ${t.stock} (id int AUTO_INCREMENT PRIMARY KEY, sku varchar(16) UNIQUE, qty int) ENGINE=InnoDB`);
        await admin.my.unsafe(`INSERT INTO ${t.stock} (sku, qty) VALUES ('A', 10)`);
      });

      test("provision_user_123: insertInto users is staged by beginDistributed and visible once committed", async () => {
        const result = await run("provision", "provision_user_123");
        expect(result).toEqual({ staged: "prepared", decided: { name: "provision_user_123", outcome: "committed", protocol: "2pc", pending: [] } });
        expect(await admin.pg.unsafe(`SELECT id, status FROM ${t.users}`)).toEqual([{ id: 123, status: "pending" }]);
        await noGids();
      });

      test("batch_txn: a worker that fails after the prepare rolls the insertInto jobs back", async () => {
        const result = await run("batch", "batch_txn");
        expect(result).toEqual({ caught: "the worker failed", state: "rolled_back" });
        expect(await admin.pg.unsafe(`SELECT id FROM ${t.jobs}`)).toEqual([]);
        await noGids();
      });

      test("a Kysely transaction across PostgreSQL, MariaDB and the store commits everywhere", async () => {
        const name = `kysely-across-${rt.name}`;
        const result = await run("acrossCommit", name);
        expect(result.seen).toEqual({
          order: { id: 1, sku: "A" }, // RETURNING on PostgreSQL
          updated: 1,
          insertId: 2, // MariaDB's AUTO_INCREMENT
          own: [{ sku: "A", qty: 9 }, { sku: "B", qty: 5 }], // the branch reads its own writes
        });
        expect(result.decided).toMatchObject({ outcome: "committed", pending: [] });
        expect(await admin.pg.unsafe(`SELECT id, sku FROM ${t.orders}`)).toEqual([{ id: 1, sku: "A" }]);
        expect(await admin.my.unsafe(`SELECT sku, qty FROM ${t.stock} ORDER BY sku`)).toEqual([{ sku: "A", qty: 9 }, { sku: "B", qty: 5 }]);
        await noGids();
      });

      test("PostgreSQL refusing to prepare rolls MariaDB and the store back too: nothing anywhere", async () => {
        const name = `kysely-refused-${rt.name}`;
        const stockBefore = await admin.my.unsafe(`SELECT sku, qty FROM ${t.stock} ORDER BY sku`);
        const result = await run("acrossRefused", name);
        expect(result).toEqual({ err: { name: "SqlError", code: "SQL_PREPARE_FAILED", db: "orders" }, state: "rolled_back", stored: null });
        expect(await admin.pg.unsafe(`SELECT id FROM ${t.orders} WHERE id = 2`)).toEqual([]);
        expect(await admin.my.unsafe(`SELECT sku, qty FROM ${t.stock} ORDER BY sku`)).toEqual(stockBefore);
        await noGids();
      });

      test("Kysely's own transaction() inside a branch is refused with INVALID_STATE (the branch is the transaction)", async () => {
        const result = await run("nested", `kysely-nested-${rt.name}`);
        expect(result).toEqual({ err: { name: "ProtocolError", code: "INVALID_STATE" } });
        expect(await admin.pg.unsafe(`SELECT id FROM ${t.users} WHERE id = 7`)).toEqual([]);
      });
    });
  }
});
