// SQL branches on two federated sidecars: A's service writes PostgreSQL, B's
// service (joined) writes MariaDB; each sidecar finishes its own gids.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { type Client, connect } from "../../client/index.ts";
import { mysqlUrl, pgUrl, SqlAdmin, sqlTestGate, uniqueName } from "../fixtures/sql-servers.ts";
import { freePorts, waitForLinks } from "../helpers/federation.ts";
import { SidecarProcess, tempDir, waitFor } from "../helpers/sidecar-process.ts";

const gate = await sqlTestGate("federated SQL tests (sql-federation.test.ts)");
if (gate.missing) test("PostgreSQL and MariaDB are running for the federated SQL tests (CI=true)", () => expect(gate.missing).toBeUndefined());

const idA = uniqueName("fedA").replace(/_/g, "-");
const idB = uniqueName("fedB").replace(/_/g, "-");
const orders = uniqueName("dtx_fed_orders");
const stock = uniqueName("dtx_fed_stock");
let admin: SqlAdmin;
let A: SidecarProcess;
let B: SidecarProcess;
let a: Client;
let b: Client;

describe.skipIf(!gate.run)("SQL branches across two sidecars", () => {
  beforeAll(async () => {
    admin = new SqlAdmin();
    await admin.pg.unsafe(`CREATE TABLE ${orders} (id int PRIMARY KEY)`);
    await admin.my.unsafe(`CREATE TABLE ${stock} (id int PRIMARY KEY) ENGINE=InnoDB`);
    const secretFile = join(tempDir("dtx-sqlfed-"), "secret");
    writeFileSync(secretFile, "sql-federation-secret\n");
    const [portA, portB] = freePorts(2);
    const common = ["--sql-reconcile-ms", "200"];
    A = new SidecarProcess({ id: idA, port: portA, peers: [`${idB}=ws://127.0.0.1:${portB}`], secretFile, dbs: [`orders=${pgUrl}`], extraArgs: common });
    B = new SidecarProcess({ id: idB, port: portB, peers: [`${idA}=ws://127.0.0.1:${portA}`], secretFile, dbs: [`stock=${mysqlUrl}`], extraArgs: common });
    await Promise.all([A.start(), B.start()]);
    await Promise.all([waitForLinks(A, [idB]), waitForLinks(B, [idA])]);
    a = await connect({ socket: A.socket });
    b = await connect({ socket: B.socket });
  });

  afterAll(async () => {
    a?.close();
    b?.close();
    await A?.cleanup();
    await B?.cleanup();
    await admin.cleanup(idA);
    await admin.cleanup(idB);
    await admin.dropAndClose([orders], [stock]);
  });

  const rows = (id: number) => admin.rows(orders, stock, id);
  const noGidsLeft = () =>
    waitFor(async () => {
      const [ga, gb] = await Promise.all([admin.gids(idA), admin.gids(idB)]);
      return ga.pg.length + ga.my.length + gb.pg.length + gb.my.length === 0;
    }, 15_000, "no gids of either sidecar left");

  async function prepareAcross(name: string, id: number) {
    return a.beginDistributed(name, async (tx) => {
      await tx.put(`orders/${id}`, id);
      await tx.sql("orders")`INSERT INTO ${tx.sql("orders")(orders)} (id) VALUES (${id})`;
      await b.join(tx.context, async (t) => {
        await t.put(`stock/${id}`, id);
        await t.sql("stock")`INSERT INTO ${t.sql("stock")(stock)} (id) VALUES (${id})`;
      });
    });
  }

  test("each sidecar's database branch carries its own sidecar id, and commit finishes both", async () => {
    await prepareAcross("fed-sql-commit", 1);
    expect((await admin.gids(idA)).pg).toHaveLength(1);
    expect((await admin.gids(idB)).my).toHaveLength(1);
    // Decided means done on both sidecars: B's MariaDB branch is committed before A's commit returns.
    expect(await a.commitDistributed("fed-sql-commit")).toMatchObject({ outcome: "committed", pending: [] });
    expect(await rows(1)).toEqual({ pg: 1, my: 1 });
    expect([await admin.gids(idA), await admin.gids(idB)]).toEqual([{ pg: [], my: [] }, { pg: [], my: [] }]);
    expect(await b.get("stock/1")).toBe(1);
  });

  test("kill -9 of the joined sidecar after prepare; commit on A; once B is back it learns the decision and commits its MariaDB branch", async () => {
    await prepareAcross("fed-sql-indoubt", 2);
    await B.kill9();
    b.close();
    const result = await a.commitDistributed("fed-sql-indoubt");
    expect(result.outcome).toBe("committed");
    expect((await admin.gids(idB)).my).toHaveLength(1); // B's branch is in doubt until B asks A
    await B.start();
    b = await connect({ socket: B.socket });
    await noGidsLeft();
    expect(await rows(2)).toEqual({ pg: 1, my: 1 });
    expect(await b.get("stock/2")).toBe(2);
  });
});
